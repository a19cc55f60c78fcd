import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { ManualClock } from '../../core/clock.js';
import { isFanoutError } from '../../core/errors.js';
import { TokenBucket, throttle, throttled } from './index.js';

/** Observes a promise without awaiting it, so a test can check "still waiting" after time moves. */
function track(promise: Promise<unknown>): { done: boolean; error: unknown } {
  const state = { done: false, error: undefined as unknown };
  promise.then(
    () => (state.done = true),
    (err) => {
      state.done = true;
      state.error = err;
    },
  );
  return state;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('a full burst passes at once, then the rate applies', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ rate: 1000, clock });
  assert.equal(bucket.burst, 1000);
  await bucket.take(1000); // starts full
  const next = track(bucket.take(500));
  await clock.advance(499);
  assert.equal(next.done, false);
  await clock.advance(1);
  assert.equal(next.done, true);
});

test('the rate is respected over simulated time', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ rate: 10_000, burst: 2_000, clock });
  let bytes = 0;
  const finished = track(
    (async () => {
      for (let i = 0; i < 100; i++) {
        await bucket.take(1_000);
        bytes += 1_000;
      }
    })(),
  );
  await tick(); // let the producer reach its first wait before time moves
  assert.equal(bytes, 2_000); // the initial burst
  // Every simulated second admits the rate (the first one also the initial burst), never more.
  for (let second = 1; second <= 9; second++) {
    await clock.advance(1000);
    assert.ok(bytes <= 2_000 + second * 10_000, `${bytes} bytes after ${second}s`);
    assert.ok(bytes >= second * 10_000, `${bytes} bytes after ${second}s: too slow`);
  }
  await clock.advance(1000);
  assert.equal(finished.done, true);
  assert.equal(bytes, 100_000);
});

test('a request larger than the burst goes into debt instead of deadlocking', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ rate: 100, burst: 100, clock });
  await bucket.take(1_000); // allowed: the bucket held a full burst
  const next = track(bucket.take(1));
  // Debt of 900 bytes plus the 1 byte asked for: 9.01 s at 100 B/s.
  await clock.advance(9_000);
  assert.equal(next.done, false);
  await clock.advance(10);
  assert.equal(next.done, true);
});

test('waiters are served first come, first served', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ rate: 100, burst: 100, clock });
  await bucket.take(100);
  const order: string[] = [];
  const big = bucket.take(100).then(() => order.push('big'));
  const small = bucket.take(1).then(() => order.push('small'));
  await clock.advance(500);
  assert.deepEqual(order, []); // the small one does not overtake the big one
  await clock.advance(500);
  await big;
  assert.deepEqual(order, ['big']);
  await clock.advance(10);
  await small;
  assert.deepEqual(order, ['big', 'small']);
});

test('setRate re-times waiters and keeps the default burst at one second', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ rate: 100, clock });
  await bucket.take(100);
  const waiting = track(bucket.take(100)); // 1 s at 100 B/s
  await clock.advance(100);
  bucket.setRate(1_000); // 90 bytes still missing: 90 ms at the new rate
  assert.equal(bucket.rate, 1_000);
  assert.equal(bucket.burst, 1_000);
  await clock.advance(89);
  assert.equal(waiting.done, false);
  await clock.advance(1);
  assert.equal(waiting.done, true);

  bucket.setRate(10); // slower: the next 10 bytes take 1 s
  const slow = track(bucket.take(10));
  await clock.advance(999);
  assert.equal(slow.done, false);
  await clock.advance(1);
  assert.equal(slow.done, true);
});

test('setRate(0) releases every waiter; rate 0 never waits', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ rate: 10, burst: 10, clock });
  await bucket.take(10);
  const a = track(bucket.take(1_000));
  const b = track(bucket.take(1_000));
  await tick();
  assert.equal(a.done || b.done, false);
  bucket.setRate(0);
  await tick();
  assert.equal(a.done && b.done, true);

  const unlimited = new TokenBucket({ rate: 0, clock });
  for (let i = 0; i < 100; i++) await unlimited.take(1e12);
  assert.equal(unlimited.waiting, 0);
});

test('abort rejects a waiter with ABORTED and lets the next one proceed', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ rate: 100, burst: 100, clock });
  await bucket.take(100);
  const controller = new AbortController();
  const aborted = bucket.take(100, controller.signal);
  const behind = track(bucket.take(50));
  controller.abort();
  await assert.rejects(aborted, (err) => isFanoutError(err, 'ABORTED'));
  assert.equal(bucket.waiting, 1);
  await clock.advance(500); // only the 50 bytes of the remaining waiter are needed
  assert.equal(behind.done, true);
  assert.equal(behind.error, undefined);

  // An already-aborted signal rejects at once, even when tokens are there.
  await assert.rejects(bucket.take(1, AbortSignal.abort()), (err) => isFanoutError(err, 'ABORTED'));
});

test('invalid arguments are rejected', async () => {
  assert.throws(() => new TokenBucket({ rate: -1 }), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => new TokenBucket({ rate: 10, burst: 0 }), { code: 'INVALID_ARGUMENT' });
  await assert.rejects(new TokenBucket({ rate: 10 }).take(-5), { code: 'INVALID_ARGUMENT' });
});

test('throttled() charges each chunk before yielding it', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ rate: 1_000, burst: 1_000, clock });
  const chunks = [Buffer.alloc(1_000, 1), Buffer.alloc(500, 2), Buffer.alloc(500, 3)];
  const seen: number[] = [];
  const done = track(
    (async () => {
      for await (const chunk of throttled(Readable.from(chunks), bucket)) seen.push(chunk.length);
    })(),
  );
  await tick();
  assert.deepEqual(seen, [1_000]);
  await clock.advance(500);
  assert.deepEqual(seen, [1_000, 500]);
  await clock.advance(500);
  assert.equal(done.done, true);
  assert.deepEqual(seen, [1_000, 500, 500]);
});

test('throttle() yields a byte stream and stops with ABORTED on abort', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ rate: 100, burst: 100, clock });
  const source = Readable.from([Buffer.from('a'.repeat(100)), Buffer.from('b'.repeat(100))]);
  const controller = new AbortController();
  const out = throttle(source, bucket, controller.signal);
  const received: Buffer[] = [];
  const finished = new Promise<unknown>((resolve) => {
    out.on('data', (chunk: Buffer) => received.push(chunk));
    out.on('error', resolve);
    out.on('end', () => resolve(undefined));
  });
  await tick();
  assert.equal(Buffer.concat(received).toString(), 'a'.repeat(100));
  controller.abort();
  const err = await finished;
  assert.ok(isFanoutError(err, 'ABORTED'), `expected ABORTED, got ${String(err)}`);
  assert.equal(source.destroyed, true);
});
