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

test('a waiter that aborts leaves the queue and never takes a slot', async () => {
  const semaphore = new Semaphore(1);
  const holder = await semaphore.acquire();
  const leaving = new AbortController();
  const left = semaphore.acquire(leaving.signal);
  const staying = semaphore.acquire();
  assert.equal(semaphore.waiting, 2);
  leaving.abort();
  await assert.rejects(left, (e: { code?: string }) => e.code === 'ABORTED');
  assert.equal(semaphore.waiting, 1);
  holder();
  const next = await staying;
  assert.equal(semaphore.held, 1);
  next();
  assert.equal(semaphore.held, 0, 'every slot is back once the holders released: none leaked by the waiter that left');
});

test('an already aborted signal is refused without queueing', async () => {
  const semaphore = new Semaphore(1);
  const gone = new AbortController();
  gone.abort();
  await assert.rejects(semaphore.acquire(gone.signal), (e: { code?: string }) => e.code === 'ABORTED');
  assert.equal(semaphore.waiting, 0);
  assert.equal(semaphore.held, 0);
});

test('an abort after the slot was granted does not free it twice', async () => {
  const semaphore = new Semaphore(1);
  const signal = new AbortController();
  const release = await semaphore.acquire(signal.signal);
  signal.abort();
  assert.equal(semaphore.held, 1);
  release();
  assert.equal(semaphore.held, 0);
});

test('tryAcquire does not jump the queue', async () => {
  const semaphore = new Semaphore(1);
  const holder = await semaphore.acquire();
  assert.equal(semaphore.tryAcquire(), undefined);
  const queued = semaphore.acquire();
  holder();
  assert.equal(semaphore.tryAcquire(), undefined, 'the slot went to the queued waiter');
  (await queued)();
  const now = semaphore.tryAcquire();
  assert.ok(now);
  now();
});
