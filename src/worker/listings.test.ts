import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import type { FanoutError } from '../core/errors.js';
import type { DirEntry } from '../core/types.js';
import { SourceListings } from './listings.js';

/** A listing that ends when the test says, or when its signal aborts. */
function pending() {
  const calls: { signal: AbortSignal; finish: (entries: DirEntry[]) => void }[] = [];
  const list = (signal: AbortSignal) =>
    new Promise<DirEntry[]>((resolve, reject) => {
      calls.push({ signal, finish: resolve });
      signal.addEventListener('abort', () => reject(signal.reason));
    });
  return { calls, list };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('at most `concurrent` listings run, `queued` more wait, and one more is OVERLOADED at once', async () => {
  const clock = new ManualClock();
  const listings = new SourceListings({ concurrent: 2, queued: 1, clock });
  const { calls, list } = pending();
  const a = listings.list('m/a', undefined, list);
  const b = listings.list('m/b', undefined, list);
  const c = listings.list('m/c', undefined, list);
  await tick();
  assert.equal(calls.length, 2, 'two run');
  assert.equal(listings.waiting, 1, 'one waits');
  // Before: every listing ran at once, however many.
  assert.throws(() => listings.list('m/d', undefined, list), (e: FanoutError) => e.code === 'OVERLOADED' && e.status === 503 && /limits\.sourceListings/.test(e.message));
  const sameAsRunning = listings.list('m/a', undefined, list);
  assert.equal(calls.length, 2, 'a directory being listed is joined, past the limit');
  calls[0]!.finish([{ name: 'a', type: 'file' }]);
  assert.deepEqual(await a, [{ name: 'a', type: 'file' }]);
  assert.deepEqual(await sameAsRunning, [{ name: 'a', type: 'file' }]);
  await tick();
  assert.equal(calls.length, 3, 'the waiting one runs in the freed slot');
  calls[1]!.finish([]);
  calls[2]!.finish([]);
  await Promise.all([b, c]);
});

test('a listing that waits longer than the queue deadline is OVERLOADED and takes no slot', async () => {
  const clock = new ManualClock();
  const listings = new SourceListings({ concurrent: 1, queued: 4, clock, queueMs: 1000 });
  const { calls, list } = pending();
  const running = listings.list('m/a', undefined, list);
  const queued = listings.list('m/b', undefined, list);
  await tick();
  await clock.advance(1000);
  await assert.rejects(queued, (e: FanoutError) => e.code === 'OVERLOADED' && /waited 1000 ms/.test(e.message));
  assert.equal(listings.waiting, 0);
  calls[0]!.finish([]);
  await running;
  const next = listings.list('m/b', undefined, list);
  await tick();
  assert.equal(calls.length, 2, 'asked again, it runs');
  calls[1]!.finish([]);
  await next;
});

test('a listing is aborted when every request waiting for it has left, not while one without a signal waits', async () => {
  const clock = new ManualClock();
  const listings = new SourceListings({ concurrent: 1, queued: 4, clock });
  const { calls, list } = pending();
  const [x, y] = [new AbortController(), new AbortController()];
  const first = listings.list('m/a', x.signal, list);
  const second = listings.list('m/a', y.signal, list);
  await tick();
  x.abort();
  await assert.rejects(first, (e: FanoutError) => e.code === 'ABORTED');
  assert.equal(calls[0]!.signal.aborted, false);
  y.abort();
  await assert.rejects(second, (e: FanoutError) => e.code === 'ABORTED');
  assert.equal(calls[0]!.signal.aborted, true, 'the source listing is stopped (before: it ran for up to timeouts.sourceList)');
  await tick();
  assert.equal(listings.running, 0, 'its slot is free');

  const z = new AbortController();
  const internal = listings.list('m/b', undefined, list);
  const client = listings.list('m/b', z.signal, list);
  z.abort();
  await assert.rejects(client, (e: FanoutError) => e.code === 'ABORTED');
  assert.equal(calls[1]!.signal.aborted, false, 'a caller without a signal still waits for it');
  calls[1]!.finish([]);
  assert.deepEqual(await internal, []);
});

test('a request queued for a slot that leaves frees its place in the queue', async () => {
  const clock = new ManualClock();
  const listings = new SourceListings({ concurrent: 1, queued: 1, clock });
  const { calls, list } = pending();
  const running = listings.list('m/a', undefined, list);
  const gone = new AbortController();
  const queued = listings.list('m/b', gone.signal, list);
  await tick();
  assert.equal(listings.waiting, 1);
  gone.abort();
  await assert.rejects(queued, (e: FanoutError) => e.code === 'ABORTED');
  await tick();
  assert.equal(listings.waiting, 0, 'no place held by a client that left');
  const another = listings.list('m/c', undefined, list);
  calls[0]!.finish([]);
  await running;
  await tick();
  calls[1]!.finish([]);
  await another;
});
