import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../../core/errors.js';
import { FsGate, TurnBatches, sourceCallLimit } from './fsgate.js';

test('calls stuck in a hung file system keep their slots past their deadlines; others wait, then fail as the source timing out', async () => {
  const gate = new FsGate(2);
  let unhang!: () => void;
  const hung = new Promise<string>((resolve) => (unhang = () => resolve('late')));
  const sourceTimeout = (err: FanoutError) => err.code === 'SOURCE_ERROR' && /gave no answer within 50 ms/.test(err.message);
  // Two calls that never return take both slots, and answer their callers with the deadline.
  await assert.rejects(gate.run('/a', 50, undefined, () => hung), sourceTimeout);
  await assert.rejects(gate.run('/b', 50, undefined, () => hung), sourceTimeout);
  // A third never starts: no thread is left for it.
  let started = false;
  await assert.rejects(
    gate.run('/c', 50, undefined, async () => {
      started = true;
      return 'c';
    }),
    (err: FanoutError) => sourceTimeout(err) && /every source thread is busy/.test(err.message),
  );
  assert.equal(started, false);
  // Once the file system answers, the slots come back.
  const waiting = gate.run('/d', 60_000, undefined, async () => 'd');
  unhang();
  assert.equal(await waiting, 'd');
  assert.equal(await gate.run('/e', 60_000, undefined, async () => 'e'), 'e');
});

test('a slot given back goes to the first waiter; an aborted waiter leaves the queue', async () => {
  const gate = new FsGate(1);
  const release = await gate.acquire('/a', 60_000);
  const order: string[] = [];
  const gone = new AbortController();
  const first = gate.acquire('/b', 60_000).then((r) => (order.push('b'), r));
  const aborted = gate.acquire('/c', 60_000, gone.signal);
  const second = gate.acquire('/d', 60_000).then((r) => (order.push('d'), r));
  gone.abort(new FanoutError('ABORTED', 'client went away'));
  await assert.rejects(aborted, (err: FanoutError) => err.code === 'ABORTED');
  release();
  release(); // a second release changes nothing
  (await first)();
  (await second)();
  assert.deepEqual(order, ['b', 'd']);
  (await gate.acquire('/e', 60_000))();
});

test('source calls may take three quarters of the pool, always at least one thread', () => {
  assert.deepEqual([1, 2, 3, 4, 8, 16, 64].map(sourceCallLimit), [1, 1, 2, 3, 6, 12, 48]);
});

test("one source's calls take at most three quarters of the shared slots: a hung one leaves the rest to the others", async () => {
  const shared = new FsGate(4);
  const hungSource = shared.child();
  const otherSource = shared.child();
  assert.equal(hungSource.limit, 3);
  let unhang!: () => void;
  const hung = new Promise<string>((resolve) => (unhang = () => resolve('late')));
  for (const path of ['/a', '/b', '/c']) await assert.rejects(hungSource.run(path, 20, undefined, () => hung), (err: FanoutError) => err.code === 'SOURCE_ERROR');
  // The hung source has no slot left; the other source still has the shared one left.
  await assert.rejects(hungSource.run('/d', 20, undefined, async () => 'd'), /every source thread is busy/);
  assert.equal(await otherSource.run('/x', 60_000, undefined, async () => 'x'), 'x');
  // Held by the other source, that last shared slot makes its next caller wait, then fail, without taking its own slot for good.
  const holding = await otherSource.acquire('/y', 60_000);
  await assert.rejects(otherSource.run('/z', 20, undefined, async () => 'z'), /every source thread is busy/);
  holding();
  assert.equal(await otherSource.run('/z', 60_000, undefined, async () => 'z'), 'z');
  unhang();
  await hung;
  assert.equal(await hungSource.run('/e', 60_000, undefined, async () => 'e'), 'e');
});

test('slots by weight: a waiter is woken once its weight fits, and no later, lighter one passes it', async () => {
  const gate = new FsGate(4);
  const three = await gate.acquire('/a', 60_000, undefined, 3);
  const order: string[] = [];
  const two = gate.acquire('/b', 60_000, undefined, 2).then((release) => (order.push('two'), release));
  const one = gate.acquire('/c', 60_000, undefined, 1).then((release) => (order.push('one'), release));
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(order, []); // one slot is free, but the waiter ahead needs two
  three();
  (await two)();
  (await one)();
  assert.deepEqual(order, ['two', 'one']);
  (await gate.acquire('/d', 60_000, undefined, 9))(); // more than the limit asks for all of it
});

test("one turn's calls share their batch's slots: all run at once, and the slots come back when the last returns", async () => {
  const gate = new FsGate(2);
  const batches = new TurnBatches(gate, 2);
  let running = 0;
  let most = 0;
  const finishers: (() => void)[] = [];
  const call = () =>
    new Promise<number>((resolve) => {
      most = Math.max(most, ++running);
      finishers.push(() => resolve(--running));
    });
  const calls = Array.from({ length: 10 }, (_, i) => batches.run(`/f${i}`, 60_000, undefined, call));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(most, 10);
  // The batch holds both slots of the gate: another call waits until every one of the ten returned.
  let other = false;
  const waiting = gate.run('/g', 60_000, undefined, async () => (other = true));
  for (const finish of finishers.splice(0, 9)) finish();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(other, false);
  finishers.pop()!();
  await Promise.all(calls);
  await waiting;
  assert.equal(other, true);
});
