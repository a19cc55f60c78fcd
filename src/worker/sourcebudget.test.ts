import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import type { Member } from '../core/types.js';
import { FanoutError } from '../core/errors.js';
import { SourceBudget, type SourceBudgetOptions } from './sourcebudget.js';

const member = (id: string): Member => ({ id, url: `http://${id}`, capacity: 1 });

/** A budget whose peers are other SourceBudgets in the same process (no sockets). */
function cluster(ids: string[], lines: SourceBudgetOptions['lines'], mountLines: Record<string, string>, clock: ManualClock, coordinatorId = ids[0]!) {
  const budgets = new Map<string, SourceBudget>();
  for (const id of ids) {
    budgets.set(
      id,
      new SourceBudget({
        lines,
        mountLines,
        workerRate: 0,
        clock,
        self: id,
        coordinatorOf: () => member(coordinatorId),
        members: () => ids,
        askPeer: async (coordinator, line, req) => budgets.get(coordinator.id)!.renew(line, req),
      }),
    );
  }
  return budgets;
}

test("a mount's reads are paced by its line, and a worker that is not the coordinator refuses renewals", async () => {
  const clock = new ManualClock();
  const budgets = cluster(['a', 'b'], { wan: { rate: 100_000, preloadFloor: 0 } }, { models: 'wan' }, clock);
  const stop = new AbortController();
  for (const b of budgets.values()) b.start(stop.signal);
  await clock.advance(1);
  const a = budgets.get('a')!;
  assert.equal(a.lines()[0]!.mode, 'lease');
  assert.equal(a.lines()[0]!.coordinator, 'a');
  assert.deepEqual(a.lines()[0]!.mounts, ['models']);
  // A mount without a line is not limited.
  await a.take('free', 10_000_000);
  assert.throws(
    () => budgets.get('b')!.renew('wan', { member: 'a', seq: 1, epoch: 'x', demand: { read: 0, preload: 0 }, applied: 0 }),
    (err: unknown) => err instanceof FanoutError && err.code === 'WORKER_UNAVAILABLE',
  );
  stop.abort();
  await clock.advance(1000);
});

test('a worker whose id another running worker holds coordinates no line, applies no share, and takes a share again once back', async () => {
  const clock = new ManualClock();
  let holds = true;
  // The ring's member of id "a" is the other process: as seen here, "a" coordinates the line.
  const budget = new SourceBudget({
    lines: { wan: { rate: 100_000, preloadFloor: 0 } },
    mountLines: { models: 'wan' },
    workerRate: 0,
    clock,
    self: 'a',
    coordinatorOf: () => member('a'),
    members: () => ['a'],
    holdsOwnId: () => holds,
    askPeer: async () => assert.fail('no coordinator elsewhere'),
  });
  const stop = new AbortController();
  budget.start(stop.signal);
  await clock.advance(1);
  assert.deepEqual([budget.lines()[0]!.mode, budget.lines()[0]!.share], ['lease', 100_000]);

  holds = false;
  await clock.advance(250);
  assert.deepEqual([budget.lines()[0]!.mode, budget.lines()[0]!.share], ['out-of-ring', 0]);
  assert.throws(
    () => budget.renew('wan', { member: 'b', seq: 1, epoch: 'x', demand: { read: 100_000, preload: 0 }, applied: 0 }),
    (err: unknown) => err instanceof FanoutError && err.code === 'WORKER_UNAVAILABLE',
  );
  // No fallback share comes once the last grant's lease has run out: that too would be on top of the rate.
  await clock.advance(5000);
  assert.deepEqual([budget.lines()[0]!.mode, budget.lines()[0]!.share], ['out-of-ring', 0]);
  let passed = false;
  const reading = budget.take('models', 1000).then(() => (passed = true));
  await clock.advance(1000);
  assert.equal(passed, false, 'nothing crosses the line while out of the ring');

  holds = true;
  await clock.advance(250);
  assert.deepEqual([budget.lines()[0]!.mode, budget.lines()[0]!.share], ['lease', 100_000]);
  await reading;
  stop.abort();
  await clock.advance(1000);
});
