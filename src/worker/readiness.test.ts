import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MembershipState } from '../core/types.js';
import { notReadyReason } from './readiness.js';

const status = (state: MembershipState, stale = false) => ({ state, stale, ignored: [] });

test('readiness: a worker in no ring (starting, its id held by another) is not ready; an etcd outage or a re-registration does not make it so', () => {
  for (const state of ['static', 'registered', 'registering'] as const) {
    assert.equal(notReadyReason('w1', status(state)), undefined, state);
    assert.equal(notReadyReason('w1', status(state, true)), undefined, `${state} while etcd is unreachable`);
  }
  assert.match(notReadyReason('w1', status('starting'))!, /starting/);
  const taken = { ...status('id-taken'), heldBy: { url: 'http://10.0.0.7:7450', since: '2026-12-06T13:00:00.000Z' } };
  assert.match(notReadyReason('w1', taken)!, /id w1 is held by another running worker at http:\/\/10\.0\.0\.7:7450 \(since 2026-12-06T13:00:00\.000Z\)/);
});
