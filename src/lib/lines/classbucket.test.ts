import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { ClassBucket } from './classbucket.js';

/** Takes `n` bytes of `cls` and records when it was admitted. */
function track(bucket: ClassBucket, n: number, cls: 'read' | 'preload', log: string[], name: string) {
  return bucket.take(n, cls).then(() => void log.push(name));
}

test('nothing passes on a share of 0 until a share is granted', async () => {
  const clock = new ManualClock();
  const bucket = new ClassBucket(clock);
  const log: string[] = [];
  const done = track(bucket, 1000, 'read', log, 'r');
  await clock.advance(5000);
  assert.deepEqual(log, []);
  assert.deepEqual(bucket.waiting('read'), { requests: 1, bytes: 1000 });
  bucket.setRate(100_000, 0);
  await clock.advance(100);
  await done;
  assert.deepEqual(log, ['r']);
});

test('waiting reads go before preloads that came first', async () => {
  const clock = new ManualClock();
  const bucket = new ClassBucket(clock);
  bucket.setRate(1_000_000, 0);
  const log: string[] = [];
  const all = [track(bucket, 100_000, 'preload', log, 'p1'), track(bucket, 100_000, 'read', log, 'r1'), track(bucket, 100_000, 'read', log, 'r2')];
  for (let i = 0; i < 50; i++) await clock.advance(10);
  await Promise.all(all);
  assert.deepEqual(log, ['r1', 'r2', 'p1']);
});

test('preloads keep their floor while reads keep the bucket busy', async () => {
  const clock = new ManualClock();
  const bucket = new ClassBucket(clock);
  bucket.setRate(1_000_000, 250_000);
  let reads = 0;
  let preloads = 0;
  const stop = new AbortController();
  const loop = async (cls: 'read' | 'preload') => {
    while (!stop.signal.aborted) {
      await bucket.take(16 * 1024, cls, stop.signal).catch(() => {});
      if (cls === 'read') reads += 16 * 1024;
      else preloads += 16 * 1024;
    }
  };
  void loop('read');
  void loop('preload');
  for (let i = 0; i < 400; i++) await clock.advance(10); // 4 s
  stop.abort();
  const total = reads + preloads;
  assert.ok(total <= 4 * 1_000_000 + 64 * 1024, `the share holds: ${total}`);
  assert.ok(preloads >= 0.2 * total && preloads <= 0.3 * total, `preloads get about their floor (a quarter): ${preloads} of ${total}`);
});
