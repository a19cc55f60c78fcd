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
