import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import { BufferPool } from '../lib/pagestore/index.js';
import { PageFill } from '../lib/transfer/index.js';
import { readSmallPage } from './smallfill.js';

const ref = { mount: 'data', path: 'a/b.seg', version: '10-1', size: 10, index: 0 };

test('a small page is read into the fill\'s own buffer, and the budget is taken only once the bytes are in', async () => {
  const fill = new PageFill('k', 10, new BufferPool(4096, 4, 64 * 1024));
  const steps: string[] = [];
  const page = await readSmallPage(
    async (_path, _version, _size, _offset, into) => {
      steps.push('read');
      into.fill(5);
      return undefined;
    },
    ref,
    0,
    10,
    fill,
    new AbortController().signal,
    async (bytes) => void steps.push(`budget ${bytes}`),
  );
  assert.deepEqual(steps, ['read', 'budget 10']);
  assert.equal(page.buffer, fill.buffer.buffer, 'the bytes are the fill\'s buffer, not a copy');
  assert.ok(page.equals(Buffer.alloc(10, 5)));
});

test('a content-addressed page asks the source for its hash, and the fill keeps what the source computed', async () => {
  const asked: (boolean | undefined)[] = [];
  const read = async (_path: string, _version: string, _size: number, _offset: number, into: Buffer, _signal?: AbortSignal, options?: { sha256?: boolean }) => {
    asked.push(options?.sha256);
    into.fill(7);
    return options?.sha256 ? 'ab'.repeat(32) : undefined;
  };
  const hashed = new PageFill('k', 10, new BufferPool(4096, 4, 64 * 1024));
  await readSmallPage(read, { ...ref, hash: 'cd'.repeat(32) }, 0, 10, hashed, new AbortController().signal, async () => {});
  assert.equal(hashed.sha256, 'ab'.repeat(32));
  const plain = new PageFill('k', 10, new BufferPool(4096, 4, 64 * 1024));
  await readSmallPage(read, ref, 0, 10, plain, new AbortController().signal, async () => {});
  assert.equal(plain.sha256, undefined);
  assert.deepEqual(asked, [true, false]);
});

test('a failed small read takes no budget and leaves its buffer out of the pool (a late read may still write it)', async () => {
  const pool = new BufferPool(4096, 4, 64 * 1024);
  const fill = new PageFill('k', 10, pool);
  let budget = 0;
  let lent: Buffer | undefined;
  await assert.rejects(
    readSmallPage(
      async (_path, _version, _size, _offset, into) => {
        lent = into;
        throw new FanoutError('SOURCE_ERROR', 'the source gave no answer within 30000 ms');
      },
      ref,
      0,
      10,
      fill,
      new AbortController().signal,
      async (bytes) => void (budget += bytes),
    ),
    (err: FanoutError) => err.code === 'SOURCE_ERROR',
  );
  assert.equal(budget, 0);
  fill.release();
  assert.notEqual(pool.acquire(10).buffer, lent!.buffer, 'the abandoned buffer is never handed out again');
});
