import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import type { Member } from '../core/types.js';
import { CORRUPT_SKIP_MS, PeerLiveness } from './peerliveness.js';

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

test('an owner delivering bytes on another relay is not checked, however long this relay waits', async () => {
  const clock = new ManualClock();
  let probes = 0;
  const liveness = new PeerLiveness(async () => (probes++, false), { clock, quietMs: 1000 });
  const queued = liveness.watch(owner, new AbortController().signal);
  const flowing = liveness.watch(owner, new AbortController().signal);
  for (let i = 0; i < 20; i++) {
    await clock.advance(500);
    flowing.progress();
  }
  await tick();
  assert.equal(probes, 0, 'bytes from the owner on any relay say it is alive');
  assert.equal(queued.signal.aborted, false);
  assert.equal(liveness.isKnownDead(owner), false);
  queued.stop();
  flowing.stop();
});

test("a check's deadline follows the owner's recent answer time, within its bounds", async () => {
  const clock = new ManualClock();
  const deadlines: number[] = [];
  let answerMs = 10;
  const liveness = new PeerLiveness(
    (_member, deadline) => {
      deadlines.push(deadline);
      return clock.sleep(answerMs).then(() => true);
    },
    { clock, quietMs: 1000, minDeadlineMs: 2000, maxDeadlineMs: 10_000 },
  );
  assert.equal(liveness.deadlineFor(owner), 2000, 'no answer seen yet: the floor');
  const watch = liveness.watch(owner, new AbortController().signal);
  await clock.advance(1000); // quiet: first check, answered in 10 ms
  await clock.advance(10);
  assert.equal(liveness.deadlineFor(owner), 2000, 'a fast owner keeps the floor');
  answerMs = 1500;
  await clock.advance(1000); // next check answered in 1.5 s
  await clock.advance(1500);
  assert.equal(liveness.deadlineFor(owner), 6000, 'four times the slow answer');
  answerMs = 5000;
  await clock.advance(1000);
  await clock.advance(5000);
  assert.equal(liveness.deadlineFor(owner), 10_000, 'capped');
  assert.deepEqual(deadlines.slice(0, 3), [2000, 2000, 6000]);
  assert.equal(watch.signal.aborted, false);
  watch.stop();
});

test('an owner that answered slowly lately must miss more checks before it is given up', async () => {
  const clock = new ManualClock();
  let mode: 'slow' | 'silent' = 'slow';
  let probes = 0;
  const liveness = new PeerLiveness(
    (_member, deadline) => {
      probes++;
      return mode === 'slow' ? clock.sleep(600).then(() => true) : clock.sleep(deadline).then(() => false);
    },
    { clock, quietMs: 1000, attempts: 2, loadedAttempts: 4 },
  );
  const watch = liveness.watch(owner, new AbortController().signal);
  await clock.advance(1000);
  await clock.advance(600); // answered in 600 ms: a loaded owner
  assert.equal(liveness.attemptsFor(owner), 4);
  mode = 'silent';
  probes = 0;
  await clock.advance(1000); // quiet again: checks start, each missing its 2.4 s deadline
  for (let i = 0; i < 3; i++) await clock.advance(2400);
  assert.equal(probes, 4, 'a fourth check after three misses');
  assert.equal(watch.signal.aborted, false, 'three misses do not give up a loaded owner');
  await clock.advance(2400);
  await tick();
  assert.equal(watch.signal.aborted, true, 'the fourth miss does');
  assert.equal(watch.ownerDead, true);
  assert.equal(liveness.isKnownDead(owner), true);
});

test("a check whose deadline fired late (this worker's own loop starved) is not counted as a miss", async () => {
  const clock = new ManualClock();
  let late = true;
  let probes = 0;
  const liveness = new PeerLiveness(
    (_member, deadline) => {
      probes++;
      // A starved process sees its 2 s timer fire after 5 s: the owner's answer may be sitting unread.
      return clock.sleep(late ? deadline * 2.5 : 10).then(() => !late);
    },
    { clock, quietMs: 1000, attempts: 2 },
  );
  const watch = liveness.watch(owner, new AbortController().signal);
  await clock.advance(1000);
  await clock.advance(5000);
  await clock.advance(5000);
  assert.equal(probes, 3, 'two late checks, then a third');
  assert.equal(watch.signal.aborted, false);
  late = false;
  await clock.advance(5000);
  await clock.advance(10);
  await tick();
  assert.equal(watch.signal.aborted, false, 'the owner answered: still relaying');
  assert.equal(liveness.isKnownDead(owner), false);
  watch.stop();
});

test('many quiet relays from one owner share one health check at a time', async () => {
  const clock = new ManualClock();
  let probes = 0;
  let inFlight = 0;
  let most = 0;
  const liveness = new PeerLiveness(
    () => {
      probes++;
      most = Math.max(most, ++inFlight);
      return clock.sleep(100).then(() => (inFlight--, true));
    },
    { clock, quietMs: 1000 },
  );
  const watches = Array.from({ length: 20 }, () => liveness.watch(owner, new AbortController().signal));
  await clock.advance(1000);
  await clock.advance(100);
  await tick();
  assert.equal(most, 1, 'never two checks of one owner at once');
  assert.equal(probes, 1, 'one check answered every relay');
  assert.ok(watches.every((w) => !w.signal.aborted));
  for (const w of watches) w.stop();
});

test('a worker back under its id at another address is checked there, not skipped as its old address is', async () => {
  const clock = new ManualClock();
  const probed: string[] = [];
  const moved: Member = { ...owner, url: 'http://a-moved' };
  const liveness = new PeerLiveness(async (member) => (probed.push(member.url), member.url === moved.url), { clock, quietMs: 1000, recheckMs: 1000, attempts: 2 });
  const old = liveness.watch(owner, new AbortController().signal);
  await clock.advance(1000);
  await tick();
  assert.equal(old.ownerDead, true);
  assert.equal(liveness.isKnownDead(owner), true);
  assert.equal(liveness.isKnownDead(moved), false, 'the new address has not failed a check');
  probed.length = 0;
  const relay = liveness.watch(moved, new AbortController().signal);
  await clock.advance(1000);
  await tick();
  assert.ok(probed.includes(moved.url), 'the relay checks the new address');
  assert.equal(relay.signal.aborted, false);
  assert.equal(liveness.isKnownDead(moved), false);
  relay.stop();
});

test('a relay that gets nothing of its page from an owner answering its health checks gives up at the stall share of the peer deadline', async () => {
  const clock = new ManualClock();
  let probes = 0;
  const liveness = new PeerLiveness(async () => (probes++, true), { clock, quietMs: 1000, stall: { firstByteMs: 8000, idleMs: 4000 } });
  const watch = liveness.watch(owner, new AbortController().signal);
  // Before the answer's head: STALL_SHARE of the first-byte deadline (6 s), health checks passing meanwhile.
  await clock.advance(5900);
  await tick();
  assert.ok(probes >= 1, 'the quiet relay had its owner checked');
  assert.equal(watch.signal.aborted, false, 'the owner answers, and the first-byte stall deadline has not passed');
  watch.progress('headers');
  // Then between chunks: STALL_SHARE of the idle deadline (3 s), counted from this page's last byte.
  await clock.advance(2900);
  watch.progress();
  await clock.advance(2900);
  await tick();
  assert.equal(watch.signal.aborted, false, 'bytes of the page came within the stall deadline');
  await clock.advance(100);
  await tick();
  assert.equal(watch.signal.aborted, true, 'nothing of the page for 3 s: the relay gives up on the owner');
  assert.equal(watch.stalled, true);
  assert.equal(watch.ownerDead, false, 'a stalled page does not make a live owner dead');
  assert.equal(liveness.isKnownDead(owner), false, 'other relays go on through it');
  assert.match(String((watch.signal.reason as Error).message), /answers its health check but sent nothing of the page/);
  watch.stop();
});

test("the owner's bytes on another relay do not keep a stalled relay waiting", async () => {
  const clock = new ManualClock();
  const liveness = new PeerLiveness(async () => true, { clock, quietMs: 1000, stall: { firstByteMs: 4000, idleMs: 4000 } });
  const stalled = liveness.watch(owner, new AbortController().signal);
  const flowing = liveness.watch(owner, new AbortController().signal);
  stalled.progress('headers');
  for (let i = 0; i < 7; i++) {
    await clock.advance(500);
    flowing.progress();
  }
  await tick();
  assert.equal(stalled.signal.aborted, true, 'stalled 3.5 s > 3 s while the owner sent other pages');
  assert.equal(flowing.signal.aborted, false);
  stalled.stop();
  flowing.stop();
});

test('an owner that sent a page failing its checksum is skipped for a while, at that address only, though it answers its health check', async () => {
  const clock = new ManualClock();
  const liveness = new PeerLiveness(async () => true, { clock });
  liveness.sentCorrupt(owner);
  assert.equal(liveness.isDistrusted(owner), true);
  assert.equal(liveness.isDistrusted({ ...owner, url: 'http://a2' }), false, 'the same id restarted elsewhere is another process');
  assert.equal(liveness.isKnownDead(owner), false, 'not dead: relays to it are not the ones that fail by silence');
  await clock.advance(CORRUPT_SKIP_MS - 1);
  assert.equal(liveness.isDistrusted(owner), true);
  await clock.advance(1);
  assert.equal(liveness.isDistrusted(owner), false, 'asked again once the skip ends');
});

test('an owner that confirms it dropped every corrupt page it sent is asked again at once; one that did not stays skipped', async () => {
  const clock = new ManualClock();
  const liveness = new PeerLiveness(async () => true, { clock });
  liveness.sentCorrupt(owner);
  liveness.sentCorrupt(owner);
  liveness.droppedCorrupt(owner);
  assert.equal(liveness.isDistrusted(owner), true, 'one of its two bad pages is not confirmed dropped');
  liveness.droppedCorrupt(owner);
  assert.equal(liveness.isDistrusted(owner), false, 'both dropped: asked again before the skip ends');
  liveness.droppedCorrupt(owner);
  liveness.sentCorrupt(owner);
  assert.equal(liveness.isDistrusted(owner), true, 'a confirmation from before does not clear a later bad page');
  liveness.droppedCorrupt({ ...owner, url: 'http://a2' });
  assert.equal(liveness.isDistrusted(owner), true, 'the same id at another address confirms nothing here');
});
