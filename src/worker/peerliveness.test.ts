import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import type { Member } from '../core/types.js';
import { PeerLiveness } from './peerliveness.js';

const owner: Member = { id: 'a', url: 'http://a', capacity: 1 };
const tick = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

test('a quiet relay from an owner that answers its health check is left alone', async () => {
  const clock = new ManualClock();
  let probes = 0;
  const liveness = new PeerLiveness(async () => (probes++, true), { clock, quietMs: 1000 });
  const watch = liveness.watch(owner, new AbortController().signal);
  await clock.advance(999);
  assert.equal(probes, 0, 'no check while the relay is within its quiet allowance');
  await clock.advance(1);
  await tick();
  assert.equal(probes, 1);
  await clock.advance(5000);
  await tick();
  assert.equal(watch.signal.aborted, false, 'a slow but live owner keeps the relay');
  assert.equal(liveness.isKnownDead(owner), false);
  watch.stop();
});

test('progress postpones the check', async () => {
  const clock = new ManualClock();
  let probes = 0;
  const liveness = new PeerLiveness(async () => (probes++, false), { clock, quietMs: 1000 });
  const watch = liveness.watch(owner, new AbortController().signal);
  for (let i = 0; i < 5; i++) {
    await clock.advance(900);
    watch.progress();
  }
  await tick();
  assert.equal(probes, 0);
  watch.stop();
});

test('an owner that fails every check is given up: the relay is aborted and the owner skipped until it answers again', async () => {
  const clock = new ManualClock();
  let probes = 0;
  let answers = false;
  const liveness = new PeerLiveness(async () => (probes++, answers), { clock, quietMs: 1000, recheckMs: 1000, attempts: 2 });
  const watch = liveness.watch(owner, new AbortController().signal);
  await clock.advance(1000);
  await tick();
  assert.equal(probes, 2, 'one missed check is not enough');
  assert.equal(watch.signal.aborted, true);
  assert.equal(watch.ownerDead, true);
  assert.equal(liveness.isKnownDead(owner), true);
  await clock.advance(10_000);
  await tick();
  assert.equal(liveness.isKnownDead(owner), true, 'still skipped while it does not answer');
  assert.ok(probes >= 10, 'checked again in the background');
  answers = true;
  await clock.advance(1000);
  await tick();
  assert.equal(liveness.isKnownDead(owner), false, 'relayed through again once it answers');
});

test("the caller's abort passes through and is not blamed on the owner", async () => {
  const clock = new ManualClock();
  const parent = new AbortController();
  const liveness = new PeerLiveness(async () => true, { clock });
  const watch = liveness.watch(owner, parent.signal);
  parent.abort();
  assert.equal(watch.signal.aborted, true);
  assert.equal(watch.ownerDead, false);
  watch.stop();
});
