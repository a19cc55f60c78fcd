import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { SourceBudget } from './sourcebudget.js';

test("a mount's cluster budget is split over the live members and re-split when they change", () => {
  const budget = new SourceBudget({ models: 350_000_000, free: 0 }, 0, new ManualClock());
  assert.deepEqual(budget.rates(), { models: 350_000_000, free: 0 });
  budget.resplit(4);
  assert.deepEqual(budget.rates(), { models: 87_500_000, free: 0 });
  budget.resplit(3);
  assert.deepEqual(budget.rates(), { models: 116_666_666, free: 0 });
  budget.resplit(0);
  assert.deepEqual(budget.rates(), { models: 350_000_000, free: 0 }, 'never divides by zero');
});

test('reads wait for both the mount share and the worker cap', async () => {
  const clock = new ManualClock();
  const budget = new SourceBudget({ models: 200 }, 50, clock);
  budget.resplit(2); // 100 B/s for models here; the worker cap (50 B/s) is tighter
  await budget.take('models', 50); // the initial burst covers this
  let done = false;
  const pending = budget.take('models', 50).then(() => (done = true));
  await clock.advance(500);
  assert.equal(done, false, 'after 0.5 s the 50 B/s worker cap has refilled only 25 bytes');
  await clock.advance(600);
  await pending;
  assert.equal(done, true);
  // A mount without a budget of its own is paced by the worker cap alone.
  const other = budget.take('other', 10);
  await clock.advance(1000);
  await other;
});
