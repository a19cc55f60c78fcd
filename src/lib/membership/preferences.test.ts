import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEtcdClient, preferredEndpoint } from './client.js';
import { EtcdJsonClient } from '../etcdjson/index.js';
import { forgetSharedEndpointPreferences, sharedEndpointPreference } from './preferences.js';

/** Runs `fn` with the state file at a temp path, as a fresh process would find it (the registry forgotten before and after). */
function withStateFile(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'fanout-preferences-'));
  const before = process.env.FANOUT_ETCD_STATE;
  process.env.FANOUT_ETCD_STATE = join(dir, 'etcd-endpoints.json');
  forgetSharedEndpointPreferences();
  t.after(() => {
    if (before === undefined) delete process.env.FANOUT_ETCD_STATE;
    else process.env.FANOUT_ETCD_STATE = before;
    forgetSharedEndpointPreferences();
    rmSync(dir, { recursive: true, force: true });
  });
  return process.env.FANOUT_ETCD_STATE;
}

test('one preference per endpoint list in a process, however the endpoints are spelled', (t) => {
  withStateFile(t);
  const one = sharedEndpointPreference(['http://a:2379', 'http://b:2379']);
  assert.equal(sharedEndpointPreference(['http://A:2379/', 'http://b:2379']), one);
  assert.notEqual(sharedEndpointPreference(['http://b:2379', 'http://a:2379']), one, 'another order: indices differ');
  assert.notEqual(sharedEndpointPreference(['http://a:2379']), one);
});

test('the gRPC and the JSON client of the same endpoints share what they learn', (t) => {
  withStateFile(t);
  const endpoints = ['http://127.0.0.1:1', 'http://127.0.0.1:2'];
  const grpc = createEtcdClient({ endpoints });
  const json = new EtcdJsonClient({ endpoints });
  try {
    sharedEndpointPreference(endpoints).failed(0, true); // what the JSON client does when etcd at :1 gives no answer
    assert.equal(preferredEndpoint(grpc), 1, 'the gRPC client asks :2 first');
  } finally {
    grpc.close();
    json.close();
  }
});

test('the next process starts from the cool-downs and preferred endpoint of the last', (t) => {
  withStateFile(t);
  const endpoints = ['http://a:2379', 'http://b:2379', 'http://c:2379'];
  const first = sharedEndpointPreference(endpoints);
  first.failed(0, true); // a gave no answer: saved
  first.answered(2); // c answered first after it: saved
  forgetSharedEndpointPreferences(); // a new process
  const next = sharedEndpointPreference(endpoints);
  assert.notEqual(next, first);
  assert.deepEqual(next.attempts(), [2, 1, 0], 'c first, the silent a last');
});

test('FANOUT_ETCD_STATE=off: every process starts afresh', (t) => {
  withStateFile(t);
  process.env.FANOUT_ETCD_STATE = 'off';
  forgetSharedEndpointPreferences();
  const endpoints = ['http://a:2379', 'http://b:2379'];
  sharedEndpointPreference(endpoints).failed(0, true);
  forgetSharedEndpointPreferences();
  assert.deepEqual(sharedEndpointPreference(endpoints).attempts(), [0, 1]);
});
