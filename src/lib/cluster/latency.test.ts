import { test } from 'node:test';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { HedgePolicy, parseHedge } from './hedge.js';
import { LatencyTracker } from './latency.js';

test('the tracker gives quantiles of recent samples and none with too few', () => {
  const tracker = new LatencyTracker(new ManualClock(), { minSamples: 5 });
  for (let i = 1; i <= 4; i++) tracker.record(i);
  assert.equal(tracker.quantile(0.95), undefined);
  for (let i = 5; i <= 100; i++) tracker.record(i);
  assert.equal(tracker.quantile(0.95), 95);
  assert.equal(tracker.quantile(0.5), 50);
  assert.equal(tracker.quantile(1), 100);
});

test('the tracker keeps a bounded number of samples, newest win', () => {
  const tracker = new LatencyTracker(new ManualClock(), { capacity: 10, minSamples: 1 });
  for (let i = 0; i < 1000; i++) tracker.record(1000);
  for (let i = 0; i < 10; i++) tracker.record(1);
  assert.equal(tracker.size, 10);
  assert.equal(tracker.quantile(0.95), 1);
});

test('old samples age out, so the estimate follows the cluster', async () => {
  const clock = new ManualClock();
  const tracker = new LatencyTracker(clock, { maxAgeMs: 60_000, minSamples: 3 });
  for (let i = 0; i < 10; i++) tracker.record(500);
  assert.equal(tracker.quantile(0.95), 500);
  await clock.advance(61_000);
  assert.equal(tracker.quantile(0.95), undefined, 'only stale samples left');
  for (let i = 0; i < 10; i++) tracker.record(4);
  assert.equal(tracker.quantile(0.95), 4);
});

test('quantiles equal those of the recent samples sorted, whatever mix of ages and values', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ ms: fc.double({ min: 0, max: 1e4, noNaN: true }), advance: fc.integer({ min: 0, max: 30_000 }) }), { maxLength: 60 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      async (samples, q) => {
        const clock = new ManualClock();
        const tracker = new LatencyTracker(clock, { capacity: 16, maxAgeMs: 60_000, minSamples: 1 });
        const kept: { ms: number; at: number }[] = [];
        for (const { ms, advance } of samples) {
          await clock.advance(advance);
          tracker.record(ms);
          kept.push({ ms, at: clock.now() });
        }
        const recent = kept
          .slice(-16)
          .filter((s) => clock.now() - s.at <= 60_000)
          .map((s) => s.ms)
          .sort((a, b) => a - b);
        const expected = recent.length === 0 ? undefined : recent[Math.min(recent.length - 1, Math.max(0, Math.ceil(q * recent.length) - 1))];
        assert.equal(tracker.quantile(q), expected);
      },
    ),
  );
});

test('auto hedge delay: initial without samples, then 3 × p95 within floor and ceiling', async () => {
  const clock = new ManualClock();
  const policy = new HedgePolicy('auto', clock);
  assert.equal(policy.delayMs(), 1000, 'initial delay before pages were timed');
  for (let i = 0; i < 50; i++) policy.observeFirstByte(2);
  assert.equal(policy.delayMs(), 100, 'fast pages: the floor');
  await clock.advance(2000); // past the tracker's recompute interval
  for (let i = 0; i < 200; i++) policy.observeFirstByte(i < 190 ? 60 : 400);
  assert.equal(policy.delayMs(), 180, '3 × p95 of 60 ms');
  await clock.advance(2000);
  for (let i = 0; i < 256; i++) policy.observeFirstByte(10_000);
  assert.equal(policy.delayMs(), 5000, 'slow pages: the ceiling, so a stalled worker is still passed');
});

test('fixed and disabled hedges', () => {
  const clock = new ManualClock();
  assert.equal(new HedgePolicy(250, clock).delayMs(), 250);
  assert.equal(new HedgePolicy('off', clock).delayMs(), undefined);
});

test('speculative hedges are budgeted; failover hedges are not', () => {
  const policy = new HedgePolicy('auto', new ManualClock(), { budgetBurst: 3, budgetRatio: 0.5 });
  assert.equal([1, 2, 3, 4].filter(() => policy.tryHedge(false)).length, 3, 'the burst');
  assert.equal(policy.tryHedge(true), true, 'failover is always allowed');
  policy.onFetch();
  assert.equal(policy.tryHedge(false), false, 'half a token earned');
  policy.onFetch();
  assert.equal(policy.tryHedge(false), true, 'two fetches earn one hedge');
});

test('--hedge values: auto, off, 0, ms and s; anything else is refused', () => {
  assert.equal(parseHedge('auto'), 'auto');
  assert.equal(parseHedge('off'), 'off');
  assert.equal(parseHedge('OFF'), 'off');
  assert.equal(parseHedge('0'), 'off');
  assert.equal(parseHedge(0), 'off');
  assert.equal(parseHedge('150'), 150);
  assert.equal(parseHedge('150ms'), 150);
  assert.equal(parseHedge('1.5s'), 1500);
  assert.equal(parseHedge(undefined), 'auto');
  for (const bad of ['fast', '-5', '1m', 'auto2']) {
    assert.throws(() => parseHedge(bad), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT', bad);
  }
});
