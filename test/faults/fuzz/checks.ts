import { crc32 } from 'node:zlib';
import { ErrorCodes } from '../../../src/core/errors.js';
import type { Outcome } from './send.js';

/**
 * Properties every answer must have, whatever was asked: a response (no hang, no dropped
 * connection before the status line), no undocumented 5xx, and an error body with a stable code.
 * Each check returns a description of what is wrong, or undefined.
 */

type Response = Extract<Outcome, { kind: 'response' }>;

/**
 * 5xx the worker API documents for conditions of its source or its load (README: errors). A 500
 * (INTERNAL) is never one of them: it means the code did not anticipate the request.
 */
const DOCUMENTED_WORKER_5XX = new Set([
  'SOURCE_ERROR',
  'SOURCE_TRUNCATED',
  'CHECKSUM_MISMATCH',
  'WORKER_UNAVAILABLE',
  'NO_WORKERS',
  'OVERLOADED',
  'STORE_FULL',
  'DISK_FULL',
  'HASH_MISMATCH',
]);

/** S3 5xx codes the gateway documents: a busy/changing source, and writes to a read-only gateway. */
const DOCUMENTED_S3_5XX = new Set(['ServiceUnavailable', 'SlowDown', 'NotImplemented']);

export function answered(outcome: Outcome): Response | string {
  switch (outcome.kind) {
    case 'response':
      return outcome;
    case 'timeout':
      return 'no complete answer before the deadline';
    case 'network':
      return `connection failed: ${outcome.message}`;
    case 'unsendable':
      return `(unsendable) ${outcome.message}`;
  }
}

/** `{"error":{"code","message"}}` with a known code whose status is the one answered. */
export function checkWorkerError(res: Response, method: string): string | undefined {
  if (res.status < 400) return undefined;
  const headerCode = res.headers['x-fanout-error'];
  if (method === 'HEAD') {
    if (typeof headerCode !== 'string' || !(headerCode in ErrorCodes)) return `HEAD error ${res.status} without a known x-fanout-error header`;
    return checkWorkerCode(headerCode, res.status);
  }
  let body: { error?: { code?: unknown; message?: unknown } };
  try {
    body = JSON.parse(res.body.toString('utf8')) as typeof body;
  } catch {
    return `error ${res.status} whose body is not JSON: ${JSON.stringify(res.body.subarray(0, 200).toString())}`;
  }
  const code = body?.error?.code;
  if (typeof code !== 'string' || typeof body.error?.message !== 'string') return `error ${res.status} without {"error":{"code","message"}}: ${res.body.subarray(0, 200)}`;
  if (!(code in ErrorCodes)) return `error code ${code} is not in the error table`;
  if (headerCode !== code) return `x-fanout-error "${String(headerCode)}" differs from the body's code ${code}`;
  return checkWorkerCode(code, res.status);
}

function checkWorkerCode(code: string, status: number): string | undefined {
  const expected = ErrorCodes[code as keyof typeof ErrorCodes];
  if (expected !== status) return `code ${code} answered with HTTP ${status} (the table says ${expected})`;
  if (status >= 500 && !DOCUMENTED_WORKER_5XX.has(code)) return `undocumented ${status} ${code}`;
  return undefined;
}

/** S3 errors: an XML body with a <Code> (HEAD answers carry no body), no InternalError. */
export function checkS3Error(res: Response, method: string): string | undefined {
  if (res.status < 400) return undefined;
  if (method === 'HEAD') return res.status === 500 ? 'HEAD answered 500' : undefined;
  const text = res.body.toString('utf8');
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  if (!code) return `S3 error ${res.status} without <Code>: ${JSON.stringify(text.slice(0, 200))}`;
  if (!/^<\?xml[^>]*>\s*<Error>/.test(text)) return `S3 error ${res.status} that is not an <Error> document`;
  if (res.status >= 500 && !DOCUMENTED_S3_5XX.has(code)) return `undocumented S3 ${res.status} ${code}: ${/<Message>([^<]*)/.exec(text)?.[1]}`;
  return undefined;
}

/** A body equals the expected bytes; on a mismatch, says where. */
export function sameBytes(got: Buffer, want: Buffer, what: string): string | undefined {
  if (got.equals(want)) return undefined;
  let at = 0;
  while (at < got.length && at < want.length && got[at] === want[at]) at++;
  return `${what}: got ${got.length} bytes, expected ${want.length}; first difference at byte ${at}`;
}

export function crcHex(data: Buffer): string {
  return crc32(data).toString(16).padStart(8, '0');
}
