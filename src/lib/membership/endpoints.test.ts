import { test } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { ManualClock } from '../../core/clock.js';
import { EndpointPreference, type NoAnswerMessage } from './endpoints.js';

const endpoints = ['http://a:2379', 'http://b:2379', 'http://c:2379'];

test('requests go to the endpoint that answered last, then the others in the configured order', () => {
  const preference = new EndpointPreference(endpoints, new ManualClock());
  assert.deepEqual(preference.attempts(), [0, 1, 2]);
  preference.answered(2);
  assert.deepEqual(preference.attempts(), [2, 0, 1]);
  assert.equal(preference.current, 2);
});

test('an endpoint that gave no answer is asked last for 30 s, even when the one after it fails', async () => {
  const clock = new ManualClock(1000);
  const preference = new EndpointPreference(endpoints, clock);
  preference.failed(0, true); // a hung a
  assert.deepEqual(preference.attempts(), [1, 2, 0]);
  preference.answered(1);
  preference.failed(1, false); // b refused: c next, not the hung a (before: a, the next in order)
  assert.deepEqual(preference.attempts(), [2, 1, 0]);
  await clock.advance(29_999);
  assert.deepEqual(preference.attempts(), [2, 1, 0]);
  await clock.advance(1);
  assert.deepEqual(preference.attempts(), [2, 0, 1], 'after its cool-down a is in its place again');
});

test('a refused endpoint is not cooled down: asking it again costs nothing', () => {
  const preference = new EndpointPreference(endpoints, new ManualClock());
  preference.failed(0, false);
  assert.deepEqual(preference.attempts(), [1, 2, 0]);
  preference.failed(1, false);
  assert.deepEqual(preference.attempts(), [2, 0, 1]);
});

test('an endpoint cooling down is still asked when every other fails, the soonest to cool first', async () => {
  const clock = new ManualClock();
  const preference = new EndpointPreference(endpoints, clock);
  preference.failed(0, true);
  await clock.advance(1000);
  preference.failed(1, true);
  assert.deepEqual(preference.attempts(), [2, 0, 1]);
  preference.failed(2, false);
  assert.deepEqual(preference.attempts(), [2, 0, 1], 'both silent ones come last, a (cools first) before b');
  preference.answered(0);
  assert.deepEqual(preference.attempts(), [0, 2, 1], 'an answer ends the cool-down');
});

test('the cool-down doubles while an endpoint stays silent (30, 60, 120, 240 s at most) and starts over once it answers; each silence is published', () => {
  const clock = new ManualClock();
  const preference = new EndpointPreference(endpoints, clock);
  const seen: NoAnswerMessage[] = [];
  const onMessage = (message: unknown) => seen.push(message as NoAnswerMessage);
  subscribe('fanout:etcd:no-answer', onMessage);
  try {
    for (let i = 0; i < 5; i++) preference.failed(0, true);
    preference.failed(0, false); // a fast failure is not published and changes no cool-down
    preference.answered(0);
    preference.failed(0, true);
  } finally {
    unsubscribe('fanout:etcd:no-answer', onMessage);
  }
  assert.deepEqual(
    seen.map((m) => m.coolDownMs),
    [30_000, 60_000, 120_000, 240_000, 240_000, 30_000],
  );
  assert.ok(seen.every((m) => m.endpoint === 'http://a:2379'));
});

test('one endpoint: always asked, cool-down or not', () => {
  const preference = new EndpointPreference(['http://only:2379'], new ManualClock());
  preference.failed(0, true);
  assert.deepEqual(preference.attempts(), [0]);
  assert.equal(preference.current, 0);
});

test('a preference starts from a saved one and says when a cool-down starts or ends or another endpoint answered, not at every answer', async () => {
  const clock = new ManualClock(1000);
  let changes = 0;
  const preference = new EndpointPreference(endpoints, clock, {
    saved: { preferred: 1, coolUntil: [31_000, 0, 0], silences: [1, 0, 0] },
    onChange: () => changes++,
  });
  assert.deepEqual(preference.attempts(), [1, 2, 0], 'b first, the saved silent a last');
  preference.answered(1);
  preference.failed(1, false); // a fast failure: a guess, not yet saved
  assert.equal(changes, 0);
  preference.answered(2);
  assert.equal(changes, 1, 'c answered in place of b');
  preference.failed(2, true);
  assert.equal(changes, 2, 'c cools down');
  assert.deepEqual(preference.saved(), { preferred: 1, coolUntil: [31_000, 0, 31_000], silences: [1, 0, 1] });
  preference.answered(0);
  assert.equal(changes, 3, "a's cool-down ended by its answer");
  await clock.advance(60_000);
  assert.deepEqual(preference.saved(), { preferred: 0, coolUntil: [0, 0, 31_000], silences: [0, 0, 1] }, "c's ended cool-down is given with its silence (the file keeps it a while); a's answer cleared its own");
});
