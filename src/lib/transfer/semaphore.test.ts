import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Semaphore } from './semaphore.js';

test('at most `size` holders at once, the rest served in arrival order', async () => {
  const semaphore = new Semaphore(2);
  const order: number[] = [];
  const a = await semaphore.acquire();
  const b = await semaphore.acquire();
  const waiting = [3, 4].map((n) => semaphore.acquire().then((release) => (order.push(n), release)));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, []);
  assert.equal(semaphore.waiting, 2);
  a();
  a(); // releasing twice frees one slot only
  const third = await waiting[0]!;
  assert.deepEqual(order, [3]);
  b();
  const fourth = await waiting[1]!;
  assert.deepEqual(order, [3, 4]);
  third();
  fourth();
  const again = await semaphore.acquire();
  again();
});
