import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, type Clock } from '../../core/clock.js';
import { StatusHistory, type CounterReadings } from './history.js';

/** Counters a test moves by hand, as the worker's traffic would. */
function fakeSources() {
  const counters: CounterReadings = { hits: 0, misses: 0, served: 0, source: { models: 0 } };
  let fills = 0;
  const sources = {
    counters: async () => structuredClone(counters),
    fills: () => fills,
    used: () => 1000,
    budgets: () => ({ models: 50 }),
  };
  return { counters, sources, setFills: (n: number) => (fills = n) };
}

/** Lets the sampler reach its next sleep (its readings are async) before time moves. */
async function untilSleeping(clock: ManualClock): Promise<void> {
  for (let i = 0; i < 1000 && clock.pendingSleeps() === 0; i++) await new Promise((r) => setImmediate(r));
  assert.equal(clock.pendingSleeps(), 1, 'the sampler waits for its next boundary');
}

/** Wall time that the test steps (an NTP step, a resumed VM), over timers that do not step. */
class SteppedWallClock implements Clock {
  readonly timers: ManualClock;
  private offset = 0;

  constructor(start: number) {
    this.timers = new ManualClock(start);
  }

  now(): number {
    return this.timers.now() + this.offset;
  }

  sleep(ms: number): Promise<void> {
    return this.timers.sleep(ms);
  }

  step(ms: number): void {
    this.offset += ms;
  }
}

describe('the status history ring', () => {
  test('a sample holds the counters moved during its interval, not their totals', async () => {
    const clock = new ManualClock(10_000);
    const { counters, sources, setFills } = fakeSources();
    const history = new StatusHistory(sources, { clock, intervalMs: 5_000 });
    await history.sample(10_000); // baseline only
    assert.deepEqual(history.since(), []);
    counters.hits = 7;
    counters.misses = 3;
    counters.served = 4096;
    counters.source.models = 1024;
    setFills(2);
    await history.sample(15_000);
    counters.hits = 8;
    counters.source.models = 1024;
    await history.sample(20_000);
    const [first, second] = history.since();
    assert.deepEqual(first, { t: 15_000, ms: 5_000, hits: 7, misses: 3, served: 4096, source: { models: 1024 }, budget: { models: 50 }, fills: 2, used: 1000 });
    assert.equal(second!.hits, 1);
    assert.equal(second!.source.models, 0);
    assert.deepEqual(history.since(15_000).map((s) => s.t), [20_000], 'since() gives only newer samples');
  });

  test('keeps the window only: 15 minutes of 5 s samples is 180, however long it runs', async () => {
    const { sources } = fakeSources();
    const history = new StatusHistory(sources, { clock: new ManualClock(), intervalMs: 5_000, windowMs: 15 * 60_000 });
    assert.equal(history.capacity, 180);
    for (let i = 0; i <= 500; i++) await history.sample(i * 5_000);
    const samples = history.since();
    assert.equal(samples.length, 180);
    assert.equal(samples[0]!.t, (500 - 179) * 5_000, 'the oldest kept is 179 intervals before the newest');
    assert.equal(samples[179]!.t, 500 * 5_000);
  });

  test('runs on wall-clock multiples of the interval, so every worker has the same sample times', async () => {
    const clock = new ManualClock(12_345);
    const { sources } = fakeSources();
    const history = new StatusHistory(sources, { clock, intervalMs: 5_000 });
    const stop = new AbortController();
    const running = history.run(stop.signal);
    for (const step of [2_655, 5_000, 5_000]) {
      await untilSleeping(clock);
      await clock.advance(step); // to 15_000, 20_000, 25_000
    }
    await untilSleeping(clock);
    assert.deepEqual(history.since().map((s) => s.t), [15_000, 20_000, 25_000]);
    assert.equal(history.since()[0]!.ms, 2_655, 'the first interval covers from the start only');
    stop.abort();
    await clock.advance(5_000);
    await running;
  });

  test('a clock stepped back an hour goes on sampling every interval (the samples take the new times)', async () => {
    const HOUR = 3_600_000;
    const clock = new SteppedWallClock(HOUR + 12_345);
    const { sources } = fakeSources();
    const history = new StatusHistory(sources, { clock, intervalMs: 5_000 });
    const stop = new AbortController();
    const running = history.run(stop.signal);
    await untilSleeping(clock.timers);
    await clock.timers.advance(2_655); // the boundary HOUR + 15_000
    await untilSleeping(clock.timers);
    clock.step(-HOUR); // while it waits for HOUR + 20_000
    await clock.timers.advance(5_000);
    await untilSleeping(clock.timers);
    await clock.timers.advance(5_000);
    await untilSleeping(clock.timers);
    // Before: the next boundary after HOUR + 20_000 was HOUR + 25_000, an hour away: no sample.
    assert.deepEqual(history.since().map((s) => s.t), [HOUR + 15_000, HOUR + 20_000, 25_000]);
    stop.abort();
    await clock.timers.advance(5_000);
    await running;
  });

  test('a failed reading skips its interval; the next one covers both', async () => {
    const clock = new ManualClock(0);
    const { counters, sources } = fakeSources();
    let fail = false;
    const history = new StatusHistory({ ...sources, counters: async () => (fail ? Promise.reject(new Error('registry busy')) : sources.counters()) }, { clock, intervalMs: 5_000 });
    const stop = new AbortController();
    const running = history.run(stop.signal);
    await untilSleeping(clock);
    counters.hits = 1;
    fail = true;
    await clock.advance(5_000);
    await untilSleeping(clock);
    fail = false;
    counters.hits = 3;
    await clock.advance(5_000);
    await untilSleeping(clock);
    assert.deepEqual(history.since().map((s) => [s.t, s.ms, s.hits]), [[10_000, 10_000, 3]]);
    stop.abort();
    await clock.advance(5_000);
    await running;
  });
});
