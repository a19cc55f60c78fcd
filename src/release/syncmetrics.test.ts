import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentHealth } from './agent.js';
import type { AgentState } from './registry.js';
import { serveMetrics, syncMetricsRegistry } from './syncmetrics.js';

function health(over: Partial<AgentState>, extra: Partial<AgentHealth> = {}): AgentHealth {
  const state: AgentState = {
    host: 'h1', channel: 'prod', dir: '/srv/releases/r', current: 'v1', target: 'v1', phase: 'idle',
    bytesDone: 0, bytesTotal: 0, bytesLocal: 0, bytesFetched: 0, error: null, updatedAt: new Date().toISOString(), ...over,
  };
  return { state, behindSince: undefined, failedRounds: 0, switches: 0, damagedFiles: 0, repairs: 0, ...extra };
}

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

const labels = '{release="r",channel="prod"}';

describe('sync agent metrics', () => {
  test('a host in sync is not behind and idle', async () => {
    const text = await syncMetricsRegistry(() => health({}, { switches: 2 }), { release: 'r', channel: 'prod' }).metrics();
    assert.equal(value(text, `fanout_sync_behind${labels}`), 0);
    assert.equal(value(text, `fanout_sync_behind_seconds${labels}`), 0);
    assert.equal(value(text, `fanout_sync_phase{phase="idle",release="r",channel="prod"}`), 1);
    assert.equal(value(text, `fanout_sync_phase{phase="error",release="r",channel="prod"}`), 0);
    assert.equal(value(text, `fanout_sync_switches_total${labels}`), 2);
  });

  test('damaged files of the current version and repairs are counted', async () => {
    const text = await syncMetricsRegistry(() => health({}, { damagedFiles: 3, repairs: 1 }), { release: 'r', channel: 'prod' }).metrics();
    assert.equal(value(text, `fanout_sync_damaged_files_total${labels}`), 3);
    assert.equal(value(text, `fanout_sync_repairs_total${labels}`), 1);
  });

  test('an agent with a datacenter labels every series with it', async () => {
    const text = await syncMetricsRegistry(() => health({}, {}), { release: 'r', channel: 'prod', datacenter: 'dc-b' }).metrics();
    assert.equal(value(text, 'fanout_sync_behind{release="r",channel="prod",datacenter="dc-b"}'), 0);
  });

  test('a host behind its channel reports since how long, its phase, progress and failed rounds', async () => {
    const since = performance.now() - 90_000;
    const text = await syncMetricsRegistry(
      () => health({ target: 'v2', phase: 'error', bytesDone: 10, bytesTotal: 40 }, { behindSince: since, failedRounds: 3 }),
      { release: 'r', channel: 'prod' },
    ).metrics();
    assert.equal(value(text, `fanout_sync_behind${labels}`), 1);
    assert.ok(value(text, `fanout_sync_behind_seconds${labels}`)! >= 90);
    assert.equal(value(text, `fanout_sync_phase{phase="error",release="r",channel="prod"}`), 1);
    assert.equal(value(text, `fanout_sync_failed_rounds_total${labels}`), 3);
    assert.equal(value(text, `fanout_sync_staged_bytes${labels}`), 10);
    assert.equal(value(text, `fanout_sync_target_bytes${labels}`), 40);
  });

  test('the metrics server answers GET /metrics and 404 for anything else', async () => {
    const server = await serveMetrics('127.0.0.1:0', syncMetricsRegistry(() => health({}), { release: 'r', channel: 'prod' }));
    try {
      const res = await fetch(`${server.url}/metrics`);
      assert.equal(res.status, 200);
      assert.match(await res.text(), /^fanout_sync_behind\{/m);
      assert.equal((await fetch(`${server.url}/v1/status`)).status, 404);
      assert.equal((await fetch(`${server.url}/metrics`, { method: 'POST' })).status, 404);
    } finally {
      await server.close();
    }
  });
});
