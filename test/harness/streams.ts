import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { isFanoutError, type ErrorCode } from '../../src/core/errors.js';

/** Small assertions shared by the source adapters' tests. */

export const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** For assert.rejects/throws: the error is a FanoutError with `code`. */
export function rejectsWith(code: ErrorCode) {
  return (err: unknown) => {
    assert.ok(isFanoutError(err, code), `expected ${code}, got ${String((err as Error)?.stack ?? err)}`);
    return true;
  };
}
