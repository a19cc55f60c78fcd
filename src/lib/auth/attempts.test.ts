import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { isFanoutError } from '../../core/errors.js';
import { FailedAttempts, ThrottledError } from './attempts.js';
import { AccessGate } from './gate.js';
import { authConfigSchema } from '../config/index.js';

const limits = { max: 3, window: 60_000, clients: 4 };
const at = (remoteAddress: string) => ({ remoteAddress });

test('an address is throttled after max refusals within the window, others are not, and the window ends it', async () => {
  const clock = new ManualClock(1_000);
  const attempts = new FailedAttempts(limits, clock);
  for (let i = 0; i < 3; i++) {
    assert.equal(attempts.retryAfter(at('10.0.0.1')), 0, `attempt ${i + 1} goes on`);
    attempts.failed(at('10.0.0.1'));
  }
  assert.equal(attempts.retryAfter(at('10.0.0.1')), 60_000);
  assert.equal(attempts.retryAfter(at('10.0.0.2')), 0, 'another address');
  await clock.advance(59_999);
  assert.equal(attempts.retryAfter(at('10.0.0.1')), 1);
  const seen: string[] = [];
  attempts.onThrottled = (server) => seen.push(server);
  const err = attempts.throttled('10.0.0.1', 1, 'api');
  assert.ok(isFanoutError(err, 'TOO_MANY_ATTEMPTS') && err instanceof ThrottledError);
  assert.equal(err.status, 429);
  assert.equal(err.retryAfterSeconds, 1, 'rounded up, at least a second');
  assert.deepEqual(seen, ['api'], 'counted');
  await clock.advance(1);
  assert.equal(attempts.retryAfter(at('10.0.0.1')), 0, 'the window is over');
  assert.equal(attempts.size, 0, 'and the address forgotten');
});

test('refusals spread wider than the window never throttle', async () => {
  const clock = new ManualClock(0);
  const attempts = new FailedAttempts(limits, clock);
  for (let i = 0; i < 10; i++) {
    attempts.failed(at('10.0.0.1'));
    attempts.failed(at('10.0.0.1'));
    assert.equal(attempts.retryAfter(at('10.0.0.1')), 0);
    await clock.advance(60_000);
  }
});

test('the table holds at most `clients` addresses whatever an attacker does: the oldest is dropped', () => {
  const attempts = new FailedAttempts({ max: 3, window: 60_000, clients: 1000 }, new ManualClock(0));
  for (let i = 0; i < 3; i++) attempts.failed(at('10.0.0.1'));
  assert.ok(attempts.retryAfter(at('10.0.0.1')) > 0);
  for (let i = 0; i < 100_000; i++) attempts.failed(at(`2001:db8::${i.toString(16)}`));
  assert.equal(attempts.size, 1000);
  assert.equal(attempts.retryAfter(at('10.0.0.1')), 0, 'the oldest address was dropped');
  assert.equal(attempts.retryAfter(at('2001:db8::1869f')), 0, 'one refusal of the newest is remembered, not yet a throttle');
});

test('max 0 turns the limit off', () => {
  const attempts = new FailedAttempts({ max: 0, window: 60_000, clients: 10 }, new ManualClock(0));
  for (let i = 0; i < 100; i++) attempts.failed(at('10.0.0.1'));
  assert.equal(attempts.size, 0);
  assert.equal(attempts.retryAfter(at('10.0.0.1')), 0);
});

test('the gate counts unknown tokens only: no token, a weak role, a peer and a success never count', () => {
  const READ = 'read-token-0123456789';
  const ADMIN = 'admin-token-0123456789';
  const attempts = new FailedAttempts(limits, new ManualClock(0));
  const gate = new AccessGate({ tokens: [{ token: READ, role: 'read' }, { token: ADMIN, role: 'admin' }], readToken: true, clusterSecret: 'cluster-secret-0123456789' }, attempts);
  const from = at('10.0.0.9');
  const peer = gate.peerHeaders();
  for (let i = 0; i < 10; i++) {
    assert.throws(() => gate.check({}, 'read', from), (e) => isFanoutError(e, 'UNAUTHENTICATED'));
    assert.throws(() => gate.check({ authorization: `Bearer ${READ}` }, 'admin', from), (e) => isFanoutError(e, 'FORBIDDEN'));
    gate.check({ authorization: `Bearer ${READ}` }, 'read', from);
    gate.check(peer, 'read', from);
    assert.throws(() => gate.check({ ...peer, authorization: 'Bearer wrong-token-0123456789' }, 'admin', from), (e) => isFanoutError(e, 'UNAUTHENTICATED'));
  }
  assert.equal(attempts.size, 0);
  for (let i = 0; i < 3; i++) assert.throws(() => gate.check({ authorization: 'Bearer wrong-token-0123456789' }, 'read', from), (e) => isFanoutError(e, 'UNAUTHENTICATED'));
  assert.throws(() => gate.check({ authorization: `Bearer ${ADMIN}` }, 'admin', from), (e) => isFanoutError(e, 'TOO_MANY_ATTEMPTS'), 'a right token from a throttled address is not checked');
  gate.check(peer, 'read', from);
  assert.deepEqual(gate.check({ ...peer, authorization: `Bearer ${ADMIN}` }, 'admin', from), { peer: true }, 'a peer is never throttled');
  gate.check({ authorization: `Bearer ${ADMIN}` }, 'admin', at('10.0.0.10'));
});

test('auth.attempts in the config: defaults, durations, and bad values refused', () => {
  assert.deepEqual(authConfigSchema.parse({}).attempts, { max: 20, window: 60_000, clients: 10_000 });
  assert.deepEqual(authConfigSchema.parse({ attempts: { max: 5, window: '2s' } }).attempts, { max: 5, window: 2000, clients: 10_000 });
  for (const attempts of [{ max: -1 }, { max: 1.5 }, { window: '0ms' }, { clients: 0 }, { other: 1 }]) {
    assert.equal(authConfigSchema.safeParse({ attempts }).success, false, JSON.stringify(attempts));
  }
});
