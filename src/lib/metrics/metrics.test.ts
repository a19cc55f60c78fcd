import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkerMetrics, type GaugeSources } from './index.js';

function metrics(over: Partial<GaugeSources> = {}): WorkerMetrics {
  return new WorkerMetrics({
    storeUsedBytes: () => 0,
    storeCapacityBytes: () => 0,
    storePages: () => 0,
    inflightSourceReads: () => 0,
    members: () => 1,
    sourceRates: () => ({ models: 1000 }),
    ...over,
  });
}

async function sample(m: WorkerMetrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = m.registry.getSingleMetric(name);
  if (!metric) return undefined;
  const { values } = await metric.get();
  return values.find((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want))?.value;
}

describe('worker metrics', () => {
  test('only counters end in _total, and every counter does (Prometheus naming)', async () => {
    const families = await metrics().registry.getMetricsAsJSON();
    assert.ok(families.length > 20, 'default process metrics are registered too');
    for (const family of families) {
      if (String(family.type) === 'counter') assert.match(family.name, /_total$/, `counter ${family.name}`);
      else assert.doesNotMatch(family.name, /_total$/, `${family.type} ${family.name}`);
      assert.ok(family.help.length > 0, `${family.name} has help`);
    }
  });

  test('the per-handle-type process gauges are kept (their sums replace the dropped _total gauges)', async () => {
    const names = (await metrics().registry.getMetricsAsJSON()).map((f) => f.name);
    assert.ok(names.includes('fanout_nodejs_active_handles'));
    assert.ok(!names.includes('fanout_nodejs_active_handles_total'));
    assert.ok(names.includes('fanout_process_cpu_seconds_total'), 'process metrics keep their usual names under the fanout_ prefix');
  });

  test('the membership store shows as stale (1) while it is unreachable, 0 otherwise', async () => {
    let stale = false;
    const m = metrics({ membershipStale: () => stale });
    assert.equal(await sample(m, 'fanout_membership_stale'), 0);
    stale = true;
    assert.equal(await sample(m, 'fanout_membership_stale'), 1);
  });

  test('the membership state is exported as one 1 among zeros, and ignored records are counted', async () => {
    let state: 'registered' | 'id-taken' = 'registered';
    const ignored = [{ key: '/p/w9', id: 'w9', url: 'http://w1', reason: 'no-lease' as const }];
    const m = metrics({ membershipStatus: () => ({ state, stale: false, ignored }) });
    assert.equal(await sample(m, 'fanout_membership_state', { state: 'registered' }), 1);
    assert.equal(await sample(m, 'fanout_membership_state', { state: 'id-taken' }), 0);
    state = 'id-taken';
    assert.equal(await sample(m, 'fanout_membership_state', { state: 'registered' }), 0);
    assert.equal(await sample(m, 'fanout_membership_state', { state: 'id-taken' }), 1);
    assert.equal(await sample(m, 'fanout_membership_ignored_records'), 1);
  });

  test('store write failures start at zero for every reason, so the first one is an increase', async () => {
    const m = metrics();
    for (const reason of ['disk_full', 'no_room', 'io_error']) assert.equal(await sample(m, 'fanout_store_write_failures_total', { reason }), 0);
    m.storeWriteFailures.labels('disk_full').inc();
    assert.equal(await sample(m, 'fanout_store_write_failures_total', { reason: 'disk_full' }), 1);
  });

  test("a mount's source budget share is exported in bytes per second", async () => {
    assert.equal(await sample(metrics(), 'fanout_source_rate_limit_bytes_per_second', { mount: 'models' }), 1000);
  });
});
