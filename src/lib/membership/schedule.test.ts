import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { LeaseSchedule } from './index.js';

/** TTL 9 s: renewals every 3 s, backoff 100 ms doubling up to 9000/4 = 2250 ms; no jitter. */
function schedule(start = 1_000) {
  const clock = new ManualClock(start);
  return { clock, s: new LeaseSchedule({ ttlMs: 9_000, clock, random: () => 0 }) };
}

test('a fresh schedule grants at once, then renews every third of the TTL', async () => {
  const { clock, s } = schedule();
  assert.equal(s.state, 'none');
  assert.deepEqual(s.next(), { action: 'grant', at: 1_000, why: 'first' });
  s.granted(1_000);
  assert.equal(s.state, 'alive');
  assert.equal(s.expiresAt, 10_000);
  assert.deepEqual(s.next(), { action: 'renew', at: 4_000, why: 'renew' });
  await clock.advance(3_000);
  s.renewed(4_000);
  assert.deepEqual(s.next(), { action: 'renew', at: 7_000, why: 'renew' });
  assert.equal(s.expiresAt, 13_000);
});

test('expiry is counted from when the request was sent, not when the answer came', async () => {
  const { clock, s } = schedule();
  await clock.advance(500); // a slow answer
  s.granted(1_000);
  assert.equal(s.expiresAt, 10_000);
  assert.deepEqual(s.next(), { action: 'renew', at: 4_000, why: 'renew' });
});

test('the server TTL replaces the requested one', () => {
  const { s } = schedule();
  s.granted(1_000, 6_000);
  assert.equal(s.expiresAt, 7_000);
  assert.deepEqual(s.next(), { action: 'renew', at: 3_000, why: 'renew' });
});

test('failures back off exponentially up to a quarter of the TTL, and success resets', async () => {
  const { clock, s } = schedule();
  s.granted(1_000);
  await clock.advance(3_000); // t = 4000: renewal due
  const delays: number[] = [];
  for (let i = 0; i < 7; i++) {
    s.failed();
    const step = s.next();
    delays.push(step.at - clock.now());
    if (step.action !== 'renew') break;
  }
  assert.deepEqual(delays, [100, 200, 400, 800, 1600, 2250, 2250]);
  assert.equal(s.failures, 7);
  s.renewed(clock.now());
  assert.equal(s.failures, 0);
  assert.deepEqual(s.next(), { action: 'renew', at: 7_000, why: 'renew' });
});

test('jitter shortens retry delays by up to half', () => {
  const clock = new ManualClock(0);
  const s = new LeaseSchedule({ ttlMs: 9_000, clock, random: () => 0.5 });
  s.failed();
  assert.equal(s.next().at, 75); // 100 × (1 − 0.5 × 0.5)
  assert.deepEqual(s.next(), { action: 'grant', at: 75, why: 'retry' });
});

test('a lease not renewed within its TTL is presumed lost and a new grant is due', async () => {
  const { clock, s } = schedule();
  s.granted(1_000);
  await clock.advance(3_000);
  s.failed(); // etcd unreachable from t = 4000 on
  // Still believed alive just before expiry: keep trying to renew.
  await clock.advance(5_999);
  assert.equal(s.state, 'alive');
  assert.equal(s.next().action, 'renew');
  s.failed();
  await clock.advance(1); // t = 10000 = sent + TTL
  assert.equal(s.checkExpiry(), true);
  assert.equal(s.checkExpiry(), false, 'a loss is reported once');
  assert.equal(s.state, 'lost');
  assert.equal(s.expiresAt, undefined);
  const step = s.next();
  assert.equal(step.action, 'grant');
  assert.equal(step.why, 'lost');
  // Still in backoff: the grant waits for the retry time rather than hammering etcd.
  assert.equal(step.at, 9_999 + 200);
  // A late renewal answer for the lost lease does not revive it.
  s.renewed(clock.now());
  assert.equal(s.state, 'lost');
  // etcd is back: the new grant makes everything healthy again.
  s.granted(clock.now());
  assert.equal(s.state, 'alive');
  assert.equal(s.failures, 0);
  assert.deepEqual(s.next(), { action: 'renew', at: 13_000, why: 'renew' });
});

test('a lease the server no longer knows is re-granted at once, without backoff', () => {
  const { s } = schedule();
  s.granted(1_000);
  s.failed();
  s.lost();
  assert.equal(s.state, 'lost');
  assert.equal(s.failures, 0);
  assert.deepEqual(s.next(), { action: 'grant', at: 1_000, why: 'lost' });
});

test('a never-granted lease retries its grant with backoff', async () => {
  const { clock, s } = schedule();
  s.failed();
  assert.deepEqual(s.next(), { action: 'grant', at: 1_100, why: 'retry' });
  await clock.advance(100);
  s.failed();
  assert.deepEqual(s.next(), { action: 'grant', at: 1_300, why: 'retry' });
});

test('released leases go back to none', () => {
  const { s } = schedule();
  s.granted(1_000);
  s.released();
  assert.equal(s.state, 'none');
  assert.equal(s.next().action, 'grant');
});

test('invalid options are rejected', () => {
  const clock = new ManualClock();
  assert.throws(() => new LeaseSchedule({ ttlMs: 0, clock }), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => new LeaseSchedule({ ttlMs: 1000, clock, renewFraction: 1 }), { code: 'INVALID_ARGUMENT' });
});
