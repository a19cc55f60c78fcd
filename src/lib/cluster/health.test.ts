import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import type { Member } from '../../core/types.js';
import { FanoutError } from '../../core/errors.js';
import { WorkerHealth } from './health.js';
import { missedDeadline } from './timeouts.js';

const [a, b, c] = ['a', 'b', 'c'].map((id) => ({ id, url: `http://${id}`, capacity: 1 })) as [Member, Member, Member];
const ids = (members: Member[]) => members.map((m) => m.id).join('');

test('a failed worker is tried last until its down time ends', async () => {
  const clock = new ManualClock();
  const health = new WorkerHealth(clock, { downForMs: 5000 });
  health.failed('a');
  assert.equal(ids(health.order([a, b, c])), 'bca');
  await clock.advance(5001);
  assert.equal(ids(health.order([a, b, c])), 'abc');
});

test('a slow worker goes behind healthy ones, ahead of failed ones, and decays back', async () => {
  const clock = new ManualClock();
  const health = new WorkerHealth(clock, { downForMs: 5000, slowHalfLifeMs: 10_000 });
  health.slow('a');
  health.failed('b');
  assert.equal(ids(health.order([a, b, c])), 'cab');
  assert.equal(health.isDemoted('a'), true);
  await clock.advance(9_000);
  assert.equal(health.isDemoted('a'), true, 'still demoted within one half-life');
  await clock.advance(2_000);
  assert.equal(health.isDemoted('a'), false, 'decayed back');
  assert.equal(ids(health.order([a, b, c])), 'abc');
});

test('repeated slowness demotes for longer, and the least slow goes first', async () => {
  const clock = new ManualClock();
  const health = new WorkerHealth(clock, { slowHalfLifeMs: 10_000 });
  for (let i = 0; i < 4; i++) health.slow('a');
  health.slow('b');
  assert.equal(ids(health.order([a, b, c])), 'cba');
  await clock.advance(15_000);
  assert.equal(health.isDemoted('b'), false);
  assert.equal(health.isDemoted('a'), true);
});

test('a worker that let a deadline pass stays last longer', async () => {
  const clock = new ManualClock();
  const health = new WorkerHealth(clock, { downForMs: 5000 });
  health.failed('a', true);
  await clock.advance(29_000);
  assert.equal(ids(health.order([a, b, c])), 'bca');
  await clock.advance(1_001);
  assert.equal(ids(health.order([a, b, c])), 'abc');
});

test('a missed deadline is told apart from a refusal on both page transports', () => {
  for (const code of ['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'FANOUT_FIRST_BYTE_TIMEOUT', 'FANOUT_IDLE_TIMEOUT', 'FANOUT_CONNECT_TIMEOUT']) {
    assert.equal(missedDeadline(new FanoutError('WORKER_UNAVAILABLE', 'x', { cause: Object.assign(new Error(code), { code }) })), true, code);
  }
  for (const code of ['ECONNREFUSED', 'ECONNRESET', undefined]) {
    assert.equal(missedDeadline(new FanoutError('WORKER_UNAVAILABLE', 'x', { cause: Object.assign(new Error(String(code)), { code }) })), false, String(code));
  }
  assert.equal(missedDeadline(undefined), false);
});
