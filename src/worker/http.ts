import type { IncomingMessage, ServerResponse } from 'node:http';
import { FanoutError } from '../core/errors.js';
import { decodeUrlPath, parseFanoutPath, type FanoutPath } from '../core/paths.js';
import { HEADERS } from '../lib/wire/index.js';
import { ThrottledError } from '../lib/auth/index.js';

// Range parsing and streaming a body with backpressure are shared with the S3 gateway.
export { parseRange, sendChunks, type ByteRange } from '../lib/http/index.js';

/** Small HTTP helpers for the worker's API: JSON answers, error bodies, ranges. */

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Every error leaves as `{"error":{"code","message"}}` with the code's HTTP status. */
export function sendError(res: ServerResponse, err: unknown, extraHeaders: Record<string, string> = {}): FanoutError {
  const error = toFanoutError(err);
  // The whole answer is already written: nothing is wrong on the wire. Destroying now would cut
  // a kept-alive connection the client has just put back in its pool, and its next request on
  // it would fail with "socket hang up" before any answer. The caller logs the error.
  if (res.writableEnded) return error;
  if (res.headersSent) {
    // Mid-body: the only honest signal left is to cut the connection so the reader sees a
    // truncated response instead of a short one that looks complete.
    res.destroy(error);
    return error;
  }
  const text = JSON.stringify({ error: error.toJSON() });
  res.writeHead(error.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    [HEADERS.error]: error.code,
    // A worker at a limit says when to come back (RFC 9110 10.2.3): a second, as the limits clear fast.
    ...(error.code === 'OVERLOADED' ? { 'retry-after': '1' } : {}),
    // An address throttled for its refused tokens: when its window ends (lib/auth/attempts.ts).
    ...(error instanceof ThrottledError ? { 'retry-after': String(error.retryAfterSeconds) } : {}),
    ...extraHeaders,
  });
  res.end(text);
  return error;
}

export function toFanoutError(err: unknown): FanoutError {
  if (err instanceof FanoutError) return err;
  return new FanoutError('INTERNAL', (err as Error)?.message ?? String(err), { cause: err });
}

/** Splits "/v1/page/models/a%20b.bin?x=1" after its route prefix into a validated path and query. */
export function routePath(req: IncomingMessage, prefix: string): { target: FanoutPath; query: URLSearchParams; rawPath: string } {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const rawPath = (q === -1 ? url : url.slice(0, q)).slice(prefix.length);
  const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
  const decoded = decodeUrlPath(rawPath);
  // "/v1/data/data/x" leaves "/data/x": errors name the path as the client wrote it, not "//data/x".
  return { target: parseFanoutPath(decoded.startsWith('/') ? decoded : '/' + decoded), query, rawPath };
}

export function intParam(query: URLSearchParams, name: string, max = Number.MAX_SAFE_INTEGER): number {
  const raw = query.get(name);
  if (raw === null || !/^\d{1,16}$/.test(raw) || Number(raw) > max) {
    throw new FanoutError('INVALID_ARGUMENT', `query parameter "${name}" must be a non-negative integer`);
  }
  return Number(raw);
}

/**
 * A reader counting pages in another size than this worker's would be answered another span of
 * the file under the same index, one whose length can even match what it expects (file size =
 * index × ours + its size): refused instead, with a code that names the cause. The reader tries
 * another worker; a cluster whose workers disagree shows this error until they are made alike.
 */
export function checkPageSize(asked: number, own: number): void {
  if (asked !== own) {
    throw new FanoutError('PAGE_SIZE_MISMATCH', `this worker's pages are ${own} bytes, the request counts pages of ${asked}: every worker of a cluster needs the same pageSize`);
  }
}

/**
 * How deep a request's JSON may nest: fanout's bodies nest a few levels, and 8 MB of nested
 * arrays held the event loop 4.7 s in JSON.parse and the checks after it (measured).
 */
const MAX_JSON_DEPTH = 64;

/** Whether `text`'s arrays and objects nest at most `max` deep (brackets inside strings not counted). */
export function nestsWithin(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return false;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return true;
}

/**
 * Reads a request's JSON body of at most `maxBytes` (checked against Content-Length first, then
 * as it arrives, so a client cannot make the worker buffer more). `what` names the body in
 * errors ("admin request"). Empty or unparsable bodies are INVALID_ARGUMENT, too big
 * REQUEST_TOO_LARGE. The server's requestTimeout is the read's deadline.
 */
export async function readJsonBody(req: IncomingMessage, maxBytes: number, what: string): Promise<unknown> {
  const text = (await readBody(req, maxBytes, what)).toString('utf8');
  if (text.trim() === '') throw new FanoutError('INVALID_ARGUMENT', `${what} body is empty: send a JSON object`);
  if (!nestsWithin(text, MAX_JSON_DEPTH)) throw new FanoutError('INVALID_ARGUMENT', `${what} body nests deeper than ${MAX_JSON_DEPTH} levels`);
  try {
    return JSON.parse(text);
  } catch {
    throw new FanoutError('INVALID_ARGUMENT', `${what} body is not valid JSON`);
  }
}

/**
 * A request's body of at most `maxBytes` (checked against Content-Length first, then as it
 * arrives). A client that goes away mid-body is ABORTED (its own doing, not the worker's fault);
 * too big is REQUEST_TOO_LARGE.
 */
export async function readBody(req: IncomingMessage, maxBytes: number, what: string): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > maxBytes) throw new FanoutError('REQUEST_TOO_LARGE', `${what} body of ${declared} bytes is over the limit of ${maxBytes} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) throw new FanoutError('REQUEST_TOO_LARGE', `${what} body is over the limit of ${maxBytes} bytes`);
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof FanoutError) throw err;
    throw new FanoutError('ABORTED', `client went away while sending the ${what} body: ${(err as Error).message}`);
  }
  return Buffer.concat(chunks);
}
