import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { LineCoordinator, type LeaseGrant, type LeaseRequest } from './coordinator.js';

const RATE = 100;
const busy = { read: Infinity, preload: 0 };
const idle = { read: 0, preload: 0 };

/**
 * Members that each remember what they apply and report it, as LineLease does; `rates`: the
 * line's rate in a member's config, sent with its renewals (none: a member of an older build).
 */
function members(coordinator: LineCoordinator, ring: () => string[], rates: Record<string, number> = {}) {
  const applied = new Map<string, number>();
  const seq = new Map<string, number>();
  const grantOf = (id: string, demand: LeaseRequest['demand']): LeaseGrant => {
    const s = (seq.get(id) ?? 0) + 1;
    seq.set(id, s);
    const rate = rates[id];
    const grant = coordinator.renew({ member: id, seq: s, epoch: 'e', demand, applied: applied.get(id) ?? 0, ...(rate !== undefined ? { rate } : {}) }, ring())!;
    applied.set(id, grant.rate);
    return grant;
  };
  return {
    applied,
    grantOf,
    renew: (id: string, demand: LeaseRequest['demand']): number => grantOf(id, demand).rate,
    total: () => [...applied.values()].reduce((a, b) => a + b, 0),
  };
}

test('a share moves from an idle worker to a busy one within two renewals, never adding up above the rate', async () => {
  const clock = new ManualClock();
  const ring = ['a', 'b', 'c'];
  const c = new LineCoordinator({ rate: RATE, preloadFloor: 0, leaseMs: 1000, silentMs: 750, clock });
  const m = members(c, () => ring);
  for (const id of ring) m.renew(id, idle);
  assert.ok(m.total() <= RATE);
  // a becomes busy: at each round everybody renews once (250 ms apart).
  const seen: number[] = [];
  for (let round = 0; round < 3; round++) {
    await clock.advance(250);
    seen.push(m.renew('a', busy));
    m.renew('b', idle);
    m.renew('c', idle);
    assert.ok(m.total() <= RATE + 1e-9, `round ${round}: ${m.total()}`);
  }
  assert.equal(seen.at(-1), RATE, 'the busy worker ends with the whole line');
});

test('the line re-splits when a member joins and when one leaves', async () => {
  const clock = new ManualClock();
  let ring = ['a', 'b'];
  const c = new LineCoordinator({ rate: RATE, preloadFloor: 0, leaseMs: 1000, silentMs: 750, clock });
  const m = members(c, () => ring);
  for (let i = 0; i < 3; i++) {
    await clock.advance(250);
    m.renew('a', busy);
    m.renew('b', busy);
  }
  assert.equal(m.applied.get('a'), 50);
  ring = ['a', 'b', 'c'];
  for (let i = 0; i < 3; i++) {
    await clock.advance(250);
    m.renew('a', busy);
    m.renew('b', busy);
    m.renew('c', busy);
    assert.ok(m.total() <= RATE + 1e-9);
  }
  assert.deepEqual([...m.applied.values()].map(Math.round), [33, 33, 33], 'three busy members share equally');
  ring = ['a', 'c'];
  m.applied.delete('b');
  for (let i = 0; i < 3; i++) {
    await clock.advance(250);
    m.renew('a', busy);
    m.renew('c', busy);
  }
  assert.deepEqual([m.applied.get('a'), m.applied.get('c')], [50, 50], 'the leaver’s share goes to those left');
});

test('a member that goes silent keeps its fallback share reserved; its lease share goes to the others', async () => {
  const clock = new ManualClock();
  const ring = ['a', 'b'];
  const c = new LineCoordinator({ rate: RATE, preloadFloor: 0, leaseMs: 1000, silentMs: 750, clock });
  const m = members(c, () => ring);
  for (let i = 0; i < 3; i++) {
    await clock.advance(250);
    m.renew('a', idle);
    m.renew('b', busy);
  }
  assert.equal(m.applied.get('b'), RATE);
  // b stops renewing (cut off): once its lease may have lapsed it is on rate ÷ 2, reserved.
  for (let i = 0; i < 12; i++) {
    await clock.advance(250);
    m.renew('a', busy);
  }
  assert.equal(m.applied.get('a'), RATE / 2);
});

test('a new coordinator raises nobody until members holding older grants have reported or their leases ran out', async () => {
  const clock = new ManualClock();
  const c = new LineCoordinator({ rate: RATE, preloadFloor: 0, leaseMs: 1000, silentMs: 750, clock });
  // 'a' still applies 80 from the previous coordinator; 'b' has not spoken yet (it may hold 20).
  const first = c.renew({ member: 'a', seq: 9, epoch: 'e', demand: busy, applied: 80 }, ['a', 'b', 'c'])!;
  assert.ok(first.rate <= 80, 'keeps at most what it had');
  const c2 = c.renew({ member: 'c', seq: 1, epoch: 'e', demand: busy, applied: 0 }, ['a', 'b', 'c'])!;
  assert.equal(c2.rate, 0, 'no raise while an unheard member may hold an older grant');
  // a and c renew meanwhile, as members do (a coordinator that hears from nobody for a lease starts again).
  await clock.advance(500);
  const mid = c.renew({ member: 'a', seq: 10, epoch: 'e', demand: busy, applied: first.rate }, ['a', 'b', 'c'])!;
  assert.equal(c.renew({ member: 'c', seq: 2, epoch: 'e', demand: busy, applied: 0 }, ['a', 'b', 'c'])!.rate, 0, 'still within the first lease');
  await clock.advance(501);
  c.renew({ member: 'a', seq: 11, epoch: 'e', demand: busy, applied: mid.rate }, ['a', 'b', 'c']); // lowered now that c wants a part
  const later = c.renew({ member: 'c', seq: 3, epoch: 'e', demand: busy, applied: 0 }, ['a', 'b', 'c'])!;
  assert.ok(later.rate > 0, 'after a lease the silent member counts as its fallback share only');
  assert.ok(later.rate <= RATE / 3 + 1e-6, "a, c and the silent b hold a third each");
});

test('a request overtaken by a newer one of the same member gets no grant', () => {
  const c = new LineCoordinator({ rate: RATE, preloadFloor: 0, leaseMs: 1000, silentMs: 750, clock: new ManualClock() });
  assert.ok(c.renew({ member: 'a', seq: 2, epoch: 'e', demand: busy, applied: 0 }, ['a']));
  assert.equal(c.renew({ member: 'a', seq: 1, epoch: 'e', demand: busy, applied: 0 }, ['a']), undefined);
  assert.ok(c.renew({ member: 'a', seq: 1, epoch: 'restarted', demand: busy, applied: 0 }, ['a']), 'a restarted process counts again from 1');
});

test('a coordinator that answered nothing for a lease (paused) counts members it has not heard from since as holding the whole rate', async () => {
  // a coordinates; b is busy and holds the whole line, c idles.
  const clock = new ManualClock();
  const ring = ['a', 'b', 'c'];
  const old = new LineCoordinator({ rate: RATE, preloadFloor: 0, leaseMs: 1000, silentMs: 750, clock });
  const m = members(old, () => ring);
  for (let round = 0; round < 8; round++) {
    await clock.advance(250);
    m.renew('a', idle);
    m.renew('b', busy);
    m.renew('c', idle);
  }
  assert.equal(m.applied.get('b'), RATE);
  // a is SIGSTOPped past its etcd lease: another member coordinates meanwhile, and b renews
  // there, still holding the whole line when a resumes (its last grant is less than a lease old).
  await clock.advance(10_000);
  // a resumes and asks its own coordinator for the whole line before b reports to it.
  const grant = old.renew({ member: 'a', seq: 100, epoch: 'e', demand: busy, applied: 0 }, ring)!;
  assert.equal(grant.rate + RATE, RATE, `a granted itself ${grant.rate} while b may apply ${RATE} from the other coordinator`);
});

test('members configured with a smaller rate for the line hold the whole cluster to it, and the grants say so', async () => {
  const clock = new ManualClock();
  const ring = ['a', 'b'];
  // a (the coordinator) is configured with RATE, b with a quarter of it (a config rolled out to b only).
  const c = new LineCoordinator({ rate: RATE, preloadFloor: 0, leaseMs: 1000, silentMs: 750, clock });
  const m = members(c, () => ring, { a: RATE, b: RATE / 4 });
  // Until b has reported, the coordinator knows of no smaller rate (a member's config travels with its renewals).
  m.renew('a', busy);
  for (let round = 0; round < 6; round++) {
    await clock.advance(250);
    const gb = m.grantOf('b', busy);
    const ga = m.grantOf('a', busy);
    assert.equal(ga.lineRate, RATE / 4);
    assert.equal(gb.lineRate, RATE / 4);
    assert.ok(m.total() <= RATE / 4 + 1e-9, `round ${round}: ${m.total()} applied across a line some worker is configured at ${RATE / 4} for`);
  }
  assert.equal(c.lineRate(), RATE / 4);
  assert.deepEqual([...c.differing()], [['b', RATE / 4]]);
});

test('a member of an older build (no rate in its renewal) leaves the line at the coordinator\'s rate', () => {
  const c = new LineCoordinator({ rate: RATE, preloadFloor: 0, leaseMs: 1000, silentMs: 750, clock: new ManualClock() });
  const grant = c.renew({ member: 'b', seq: 1, epoch: 'e', demand: busy, applied: 0 }, ['a', 'b'])!;
  assert.equal(grant.lineRate, RATE);
  assert.equal(c.differing().size, 0);
});
