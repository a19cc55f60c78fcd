import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { LineLease, type CappedGrant } from './lease.js';
import type { LeaseGrant, LeaseRequest } from './coordinator.js';

const RATE = 100_000;
const LEASE_MS = 1000;

/** A lease of a line of RATE whose coordinator answers `grant`, the caps it reported and the renewals it sent. */
function leaseGranted(grant: LeaseGrant, clock: ManualClock) {
  const capped: CappedGrant[] = [];
  const asked: LeaseRequest[] = [];
  const lease = new LineLease({
    line: 'wan',
    rate: RATE,
    preloadFloor: RATE / 10,
    member: 'b',
    epoch: 'e',
    clock,
    leaseMs: LEASE_MS,
    members: () => 2,
    ask: async (req) => (asked.push(req), grant),
    onCapped: (c) => capped.push(c),
  });
  return { lease, capped, asked };
}

test("a grant above the worker's own line rate is applied at that rate, and reported", async () => {
  const clock = new ManualClock();
  // A coordinator configured with a line four times as fast (or a peer granting what it likes).
  const { lease, capped } = leaseGranted({ rate: 4 * RATE, preloadMin: 2 * RATE, leaseMs: LEASE_MS }, clock);
  await lease.renew();
  assert.equal(lease.state().mode, 'lease');
  assert.equal(lease.state().share, RATE);
  assert.equal(lease.state().preloadMin, RATE, 'the preload part stays within the share');
  assert.deepEqual(capped, [{ granted: { rate: 4 * RATE, preloadMin: 2 * RATE, leaseMs: LEASE_MS }, applied: { rate: RATE, preloadMin: RATE, leaseMs: LEASE_MS }, over: ['rate'] }]);
});

test("a grant's lease longer than two of the worker's own runs out after two of them", async () => {
  const clock = new ManualClock();
  const { lease, capped } = leaseGranted({ rate: RATE, preloadMin: 0, leaseMs: 3_600_000 }, clock);
  await lease.renew();
  assert.deepEqual(capped.map((c) => [c.over, c.applied.leaseMs]), [[['leaseMs'], 2 * LEASE_MS]]);
  // No renewal after that one (the coordinator is unreachable): the whole line for an hour, before.
  await clock.advance(2 * LEASE_MS);
  assert.equal(lease.state().mode, 'fallback');
  assert.equal(lease.state().share, RATE / 2, 'the safe share: rate ÷ members');
});

test('a grant within bounds is applied as sent, and nothing is reported', async () => {
  const clock = new ManualClock();
  const { lease, capped } = leaseGranted({ rate: RATE / 2, preloadMin: RATE / 20, leaseMs: 1500 }, clock);
  await lease.renew();
  assert.deepEqual([lease.state().share, lease.state().preloadMin], [RATE / 2, RATE / 20]);
  await clock.advance(1499);
  assert.equal(lease.state().mode, 'lease', "the coordinator's lease, longer than ours but within two of them, holds");
  await clock.advance(1);
  assert.equal(lease.state().mode, 'fallback');
  assert.deepEqual(capped, []);
});

test("a lapsed lease falls back to a share of the line's rate as the coordinator held the cluster to it, and its renewals carry this worker's rate", async () => {
  const clock = new ManualClock();
  // Another worker is configured with a quarter of this one's rate: the coordinator holds the line to that.
  const { lease, asked } = leaseGranted({ rate: RATE / 8, preloadMin: 0, leaseMs: LEASE_MS, lineRate: RATE / 4 }, clock);
  await lease.renew();
  assert.deepEqual(asked.map((r) => r.rate), [RATE]);
  await clock.advance(LEASE_MS);
  assert.equal(lease.state().mode, 'fallback');
  // Before: RATE ÷ 2 here, and the other worker its own RATE ÷ 8: more than the line's RATE ÷ 4 together.
  assert.equal(lease.state().share, RATE / 8, "the fallback: the cluster's line rate ÷ members");
});
