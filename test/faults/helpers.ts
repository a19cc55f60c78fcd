import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { WorkerProcess } from '../harness/workers.js';

/** Small HTTP helpers for the fault tests: raw answers from a worker, never throwing on a cut body. */

export const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

export interface Answer {
  status: number;
  /** x-fanout-error header, or the code in a JSON error body. */
  code?: string;
  message?: string;
  body: Buffer;
  /** The body was cut (connection closed before its end). */
  cut: boolean;
}

export async function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, { headers });
  let body = Buffer.alloc(0);
  let cut = false;
  try {
    body = Buffer.from(await res.arrayBuffer());
  } catch {
    cut = true;
  }
  let code = res.headers.get('x-fanout-error') ?? undefined;
  let message: string | undefined;
  if (res.headers.get('content-type')?.includes('application/json') && res.status >= 400) {
    const parsed = JSON.parse(body.toString()) as { error?: { code?: string; message?: string } };
    code = parsed.error?.code ?? code;
    message = parsed.error?.message;
  }
  return { status: res.status, code, message, body, cut };
}

/** One page through the page API (as a client or peer asks for it). */
export function page(worker: WorkerProcess, mountPath: string, v: string, size: number, i: number): Promise<Answer> {
  return get(`${worker.url}/v1/page${mountPath}?v=${encodeURIComponent(v)}&size=${size}&i=${i}`);
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
export function assertFailed(answer: Answer, code: string): void {
  assert.ok(answer.status >= 400 || answer.cut, `expected a failure, got HTTP ${answer.status} with ${answer.body.length} bytes`);
  if (!answer.cut) assert.equal(answer.code, code, `expected ${code}, got ${answer.code}: ${answer.message}`);
}
