import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { get as httpGet, request as httpRequest, type Server } from 'node:http';
import type { WorkerConfigInput } from '../../src/lib/config/index.js';
import { freePort } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

/** Small HTTP helpers for the fault tests: raw answers from a worker, never throwing on a cut body. */

export const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

export interface Answer {
  status: number;
  /** x-fanout-error header or trailer, or the code in a JSON error body. */
  code?: string;
  message?: string;
  body: Buffer;
  /** The body was cut (connection closed before its end). */
  cut: boolean;
  /** The page ended with an x-fanout-error trailer: it failed after its headers were sent. */
  failedLate: boolean;
}

/** A GET with node:http, so that trailers (a page's late failure) are seen too. */
export function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers }, (res) => {
      const chunks: Buffer[] = [];
      let cut = false;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', () => (cut = true));
      res.on('close', () => {
        cut ||= !res.complete;
        const body = Buffer.concat(chunks);
        const trailerCode = res.trailers['x-fanout-error'];
        let code = (res.headers['x-fanout-error'] as string | undefined) ?? trailerCode;
        let message = res.trailers['x-fanout-error-message'] ? decodeURIComponent(res.trailers['x-fanout-error-message']) : undefined;
        if (String(res.headers['content-type']).includes('application/json') && (res.statusCode ?? 0) >= 400) {
          const parsed = JSON.parse(body.toString()) as { error?: { code?: string; message?: string } };
          code = parsed.error?.code ?? code;
          message = parsed.error?.message;
        }
        resolve({ status: res.statusCode ?? 0, code, message, body, cut, failedLate: trailerCode !== undefined });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * One page through the page API, as fanout's page fetcher asks for it: saying it reads trailers,
 * so a late failure comes as its code in a trailer (a client that does not say so is cut instead).
 */
export function page(worker: WorkerProcess, mountPath: string, v: string, size: number, i: number): Promise<Answer> {
  return get(`${worker.url}/v1/page${mountPath}?v=${encodeURIComponent(v)}&size=${size}&i=${i}`, { te: 'trailers' });
}

export async function stat(worker: WorkerProcess, mountPath: string): Promise<Answer & { info?: { version: string; size: number } }> {
  const answer = await get(`${worker.url}/v1/stat${mountPath}`);
  return answer.status === 200 ? { ...answer, info: JSON.parse(answer.body.toString()) } : answer;
}

/** The worker answers /healthz: it survived whatever the test did. */
export async function assertAlive(worker: WorkerProcess): Promise<void> {
  const res = await fetch(`${worker.url}/healthz`).catch((err: Error) => assert.fail(`worker is down: ${err.message}`));
  assert.equal(res.status, 200);
}

/** The read failed: an error status with `code`, or a cut body (mid-stream failure). */
export function assertFailed(answer: Answer, code: string | string[]): void {
  assert.ok(answer.status >= 400 || answer.cut || answer.failedLate, `expected a failure, got HTTP ${answer.status} with ${answer.body.length} bytes`);
  const codes = typeof code === 'string' ? [code] : code;
  if (!answer.cut) assert.ok(codes.includes(answer.code!), `expected ${codes.join(' or ')}, got ${answer.code}: ${answer.message}`);
}

/**
 * A worker `w1` (1 MiB pages, `source` mounted as `data`) whose only peer `w2` is `fake`, listening
 * here on a free port: the fake owns about half the pages and answers them as the test likes.
 */
export async function workerBesideFakePeer(fake: Server, source: string, timeouts: WorkerConfigInput['timeouts'], env?: NodeJS.ProcessEnv): Promise<WorkerProcess> {
  const fakePort = await freePort();
  await new Promise<void>((resolve) => fake.listen(fakePort, '127.0.0.1', resolve));
  const port = await freePort();
  const members = [
    { id: 'w1', url: `http://127.0.0.1:${port}` },
    { id: 'w2', url: `http://127.0.0.1:${fakePort}` },
  ];
  return WorkerProcess.start({ id: 'w1', mounts: { data: source }, pageSize: '1MiB', membership: { static: members }, timeouts }, port, env && { env });
}

/** A GET on a connection of its own (fetch would reuse a pooled one): status, body, error code. */
export function getOnNewConnection(url: string): Promise<{ status: number; body: Buffer; code: string | undefined }> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), code: res.headers['x-fanout-error'] as string | undefined }));
      res.on('error', reject);
    }).on('error', reject);
  });
}
