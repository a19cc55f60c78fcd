import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from './bufferpool.js';

const KiB = 1024;

test('small buffers are reused by size class once released, and only once however often released', () => {
  const pool = new BufferPool(4 * 1024 * KiB, 4, 1024 * KiB);
  const a = pool.acquire(64 * KiB);
  assert.equal(a.length, 64 * KiB);
  a.fill(7);
  pool.release(a);
  pool.release(a);
  const b = pool.acquire(60 * KiB); // same 64 KiB class
  assert.equal(b.buffer, a.buffer, 'the released memory comes back');
  assert.equal(b.length, 60 * KiB);
  const c = pool.acquire(64 * KiB);
  assert.notEqual(c.buffer, a.buffer, 'a buffer released twice is handed out once');
});

test('buffers the pool did not make, views into the middle, and anything past the idle bound are not kept', () => {
  const pool = new BufferPool(4 * 1024 * KiB, 4, 128 * KiB);
  const foreign = Buffer.allocUnsafeSlow(64 * KiB);
  pool.release(foreign);
  assert.notEqual(pool.acquire(64 * KiB).buffer, foreign.buffer);
  const mine = pool.acquire(64 * KiB);
  pool.release(mine.subarray(16));
  assert.notEqual(pool.acquire(64 * KiB).buffer, mine.buffer, 'a view that does not start the memory is not taken back');
  const [x, y, z] = [pool.acquire(64 * KiB), pool.acquire(64 * KiB), pool.acquire(64 * KiB)];
  for (const buffer of [x, y, z]) pool.release(buffer);
  const again = [pool.acquire(64 * KiB), pool.acquire(64 * KiB), pool.acquire(64 * KiB)].map((b) => b.buffer);
  assert.equal(again.filter((m) => m === x.buffer || m === y.buffer || m === z.buffer).length, 2, 'two of 64 KiB fit the 128 KiB idle bound');
});

test('without smallBytes, small buffers are allocated each time as before; page-sized ones are pooled', () => {
  const pool = new BufferPool(1024 * KiB, 4);
  const a = pool.acquire(64 * KiB);
  pool.release(a);
  assert.notEqual(pool.acquire(64 * KiB).buffer, a.buffer);
  const page = pool.acquire();
  pool.release(page);
  assert.equal(pool.acquire(), page);
});
