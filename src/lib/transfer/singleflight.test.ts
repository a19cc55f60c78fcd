import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import { FanoutError } from '../../core/errors.js';
import { PageFill, SingleFlight } from './singleflight.js';
import { BufferPool } from '../pagestore/index.js';

/** A source the test feeds by hand, to observe waiters before the page is complete. */
function manualSource() {
  const queue: (Buffer | Error | null)[] = [];
  let wake: (() => void) | undefined;
  async function* iterate(): AsyncGenerator<Buffer> {
    while (true) {
      while (queue.length === 0) await new Promise<void>((r) => (wake = r));
      const item = queue.shift()!;
      if (item === null) return;
      if (item instanceof Error) throw item;
      yield item;
    }
  }
  const push = (item: Buffer | Error | null) => {
    queue.push(item);
    wake?.();
  };
  return { iterate, push };
}

async function collect(fill: PageFill): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of fill.chunks()) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

test('many waiters share one source read and all get the whole page', async () => {
  const flights = new SingleFlight();
  const source = manualSource();
  let opens = 0;
  const completed: PageFill[] = [];
  const join = () =>
    flights.join('k', 6, () => (opens++, source.iterate()), async (f) => void completed.push(f));
  const first = join();
  const readers = [collect(first.fill)];
  for (let i = 0; i < 7; i++) {
    const again = join();
    assert.equal(again.started, false);
    readers.push(collect(again.fill));
  }
  source.push(Buffer.from('abc'));
  source.push(Buffer.from('def'));
  source.push(null);
  const pages = await Promise.all(readers);
  for (const page of pages) assert.equal(page.toString(), 'abcdef');
  assert.equal(opens, 1);
  await first.fill.settled;
  await new Promise((r) => setImmediate(r));
  assert.equal(completed.length, 1);
  assert.equal(completed[0]!.crc, crc32(Buffer.from('abcdef')));
  assert.equal(flights.inflight, 0);
});

test('waiters receive bytes before the page is complete', async () => {
  const flights = new SingleFlight();
  const source = manualSource();
  const { fill } = flights.join('k', 6, () => source.iterate(), async () => {});
  const chunks = fill.chunks();
  source.push(Buffer.from('abc'));
  const first = await chunks.next();
  assert.equal(first.value?.toString(), 'abc');
  assert.equal(fill.done, false);
  source.push(Buffer.from('def'));
  source.push(null);
  assert.equal((await chunks.next()).value?.toString(), 'def');
  assert.equal((await chunks.next()).done, true);
});

test('a truncated source read fails every waiter and is never stored', async () => {
  const flights = new SingleFlight();
  const source = manualSource();
  let stored = false;
  const { fill } = flights.join('k', 10, () => source.iterate(), async () => void (stored = true));
  const reader = collect(fill);
  source.push(Buffer.from('abc'));
  source.push(null);
  await assert.rejects(reader, (e: FanoutError) => e.code === 'SOURCE_TRUNCATED');
  assert.equal(stored, false);
  assert.equal(flights.inflight, 0);
});

test('a source error is passed to waiters with its code', async () => {
  const flights = new SingleFlight();
  const source = manualSource();
  const { fill } = flights.join('k', 10, () => source.iterate(), async () => {});
  const reader = collect(fill);
  source.push(new FanoutError('SOURCE_CHANGED', 'changed'));
  await assert.rejects(reader, (e: FanoutError) => e.code === 'SOURCE_CHANGED');
});

test('a reader asking for a running fill at another length is refused, and the fill goes on for its own readers', async () => {
  const flights = new SingleFlight();
  const source = manualSource();
  const { fill } = flights.join('k', 6, () => source.iterate(), async () => {});
  const reader = collect(fill);
  assert.throws(() => flights.join('k', 5, () => source.iterate(), async () => {}), (e: FanoutError) => e.code === 'INVALID_ARGUMENT');
  source.push(Buffer.from('abcdef'));
  source.push(null);
  assert.equal((await reader).toString(), 'abcdef');
});

test('a source that sends too much is rejected', async () => {
  const flights = new SingleFlight();
  const source = manualSource();
  const { fill } = flights.join('k', 2, () => source.iterate(), async () => {});
  const reader = collect(fill);
  source.push(Buffer.from('abc'));
  await assert.rejects(reader, (e: FanoutError) => e.code === 'SOURCE_ERROR');
});

test('a fill whose every reader left is cancelled and leaves the table', async () => {
  const flights = new SingleFlight();
  let seen: AbortSignal | undefined;
  const source = manualSource();
  const { fill } = flights.join('k', 10, (signal) => ((seen = signal), source.iterate()), async () => {});
  fill.enter();
  fill.enter();
  fill.leave();
  assert.equal(seen?.aborted, false, 'one reader is still there');
  fill.leave();
  assert.equal(seen?.aborted, true);
  source.push(new Error('source read aborted'));
  await fill.settled;
  await new Promise((r) => setImmediate(r));
  assert.equal(flights.inflight, 0);
});

test('a preload fill is not cancelled when its readers leave', async () => {
  const flights = new SingleFlight();
  const source = manualSource();
  let stored = false;
  const { fill } = flights.join('k', 3, () => source.iterate(), async () => void (stored = true));
  fill.keepAlive = true;
  fill.enter();
  fill.leave();
  assert.equal(fill.signal.aborted, false);
  source.push(Buffer.from('abc'));
  source.push(null);
  await fill.settled;
  await new Promise((r) => setImmediate(r));
  assert.equal(stored, true);
});

test('the table\'s stop signal stops every unfinished fill, preloads and later ones included, with its reason', async () => {
  const stop = new AbortController();
  const flights = new SingleFlight(undefined, undefined, stop.signal);
  const finished = manualSource();
  const { fill: done } = flights.join('done', 3, () => finished.iterate(), async () => {});
  finished.push(Buffer.from('abc'));
  finished.push(null);
  await done.settled;
  const reading = manualSource();
  let seen: AbortSignal | undefined;
  const { fill: read } = flights.join('read', 10, (signal) => ((seen = signal), reading.iterate()), async () => {});
  read.enter();
  const { fill: preload } = flights.join('preload', 10, () => manualSource().iterate(), async () => {});
  preload.keepAlive = true;
  assert.equal(seen?.aborted, false, 'a fill with a reader runs until the stop');
  const reason = new FanoutError('ABORTED', 'worker stopping');
  stop.abort(reason);
  assert.equal(seen?.aborted, true);
  assert.equal(seen?.reason, reason);
  assert.equal(preload.signal.aborted, true, 'a preload that no reader could cancel stops with the worker');
  assert.equal(done.signal.aborted, false, 'a finished fill is left as it is');
  let later: AbortSignal | undefined;
  const { fill: after } = flights.join('after', 3, (signal) => ((later = signal), manualSource().iterate()), async () => {});
  assert.equal(later?.aborted, true, 'a fill started after the stop is stopped before its source is opened');
  assert.equal(after.signal.reason, reason);
  reading.push(new Error('source read aborted'));
  await read.settled;
});

test('a reader arriving after a fill was abandoned starts a new one', async () => {
  const flights = new SingleFlight();
  const first = manualSource();
  const { fill: old } = flights.join('k', 3, () => first.iterate(), async () => {});
  old.enter();
  old.leave();
  const second = manualSource();
  const { fill, started } = flights.join('k', 3, () => second.iterate(), async () => {});
  assert.equal(started, true);
  assert.notEqual(fill, old);
  first.push(new Error('aborted'));
  await old.settled;
  await new Promise((r) => setImmediate(r));
  assert.equal(flights.inflight, 1, 'the old fill leaving does not remove the new one');
  second.push(Buffer.from('abc'));
  second.push(null);
  await fill.settled;
});

test('a fill buffer that sockets still write is reused only once their writes are done, and counted meanwhile', async () => {
  const pool = new BufferPool(8, 4);
  const flights = new SingleFlight(pool);
  const source = manualSource();
  const { fill } = flights.join('k', 8, () => source.iterate(), async () => {});
  fill.enter();
  fill.hold();
  source.push(Buffer.from('abcdefgh'));
  source.push(null);
  await fill.settled;
  const buffer = fill.buffer;
  const before = PageFill.orphanedBytes;
  const unpin = fill.pin(); // a slow socket still has a view of the buffer queued
  fill.release();
  fill.leave();
  await new Promise((r) => setImmediate(r));
  assert.equal(fill.buffer, buffer, 'kept while a socket write holds a view of it');
  assert.equal(PageFill.orphanedBytes, before + 8, 'counted as kept only by sockets');
  assert.notEqual(pool.acquire(), buffer, 'not lent to another fill meanwhile');
  unpin();
  unpin(); // a second report of the same write changes nothing
  assert.equal(PageFill.orphanedBytes, before);
  assert.equal(pool.acquire(), buffer, 'back in the pool once the write is done');
});
