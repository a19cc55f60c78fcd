import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { freePort, waitFor } from '../harness/ports.js';
import { fanout } from '../harness/cli.js';
import { exposedNames, promtool } from '../harness/promtool.js';
import { SyncProcess, currentVersion } from '../harness/release.js';
import { repoRoot, WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
const monitoring = join(repoRoot, 'examples/monitoring');

/** Every `fanout_…` series name an expression mentions (recording rules are named `fanout:…`). */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\bfanout_[a-z0-9_]+/g)].map((m) => m[0]);
}

/** Every PromQL expression of the Grafana dashboard, with its panel title. */
function dashboardQueries(dashboard: { panels: { title: string; targets?: { expr: string }[] }[] }): { title: string; expr: string }[] {
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })));
}

/** Grafana's variables replaced by what they stand for, so that promtool can parse the query. */
function withoutVariables(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$sync_job', 'fanout-sync').replaceAll('$job', 'fanout').replaceAll('$instance', '.*');
}

describe('monitoring: /metrics, alert rules and dashboard against a real worker and sync agent', () => {
  let etcd: EtcdServer;
  let worker: WorkerProcess;
  let agent: SyncProcess;
  let root: string;
  let source: string;
  let releaseDir: string;
  let syncMetricsUrl: string;
  let common: string[];

  const scrape = async (url: string) => {
    const res = await fetch(url);
    assert.equal(res.status, 200);
    return res.text();
  };
  const sample = async (url: string, series: string): Promise<number | undefined> => {
    const line = (await scrape(url)).split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  };
  const cli = async (args: string[]) => {
    const result = await fanout([...args, ...common, '--json']);
    assert.equal(result.code, 0, `fanout ${args.join(' ')}: ${result.stdout}${result.stderr}`);
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-monitoring-'));
    source = join(root, 'source');
    releaseDir = join(root, 'host');
    await mkdir(join(source, 'models/v1'), { recursive: true });
    await mkdir(join(source, 'models/v2'), { recursive: true });
    await writeFile(join(source, 'big.bin'), randomBytes(3 * MiB + 5));
    await writeFile(join(source, 'models/v1/w.bin'), randomBytes(MiB + 1));
    await writeFile(join(source, 'models/v2/w.bin'), randomBytes(MiB + 2));
    etcd = await startEtcd();
    worker = await WorkerProcess.start({
      id: 'w1',
      // A second mount over a line: the line's gauges and counter are exported (and checked).
      lines: { wan: { rate: '1GB' } },
      mounts: { data: { uri: source, sourceRate: '1GB' }, remote: { uri: source, line: 'wan' } },
      pageSize: '1MiB',
      membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3 } },
    });
    common = ['--etcd', etcd.endpoint, '--endpoint', worker.url];
    await waitFor('the worker to see itself in etcd', async () => ((await (await fetch(`${worker.url}/v1/cluster`)).json()) as { members: unknown[] }).members.length === 1);
    // Misses, then hits, then an error: every counter family gets samples.
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${worker.url}/v1/data/data/big.bin`);
      assert.equal(res.status, 200, await res.clone().text());
      assert.equal((await res.arrayBuffer()).byteLength, 3 * MiB + 5);
    }
    assert.equal((await fetch(`${worker.url}/v1/data/data/missing.bin`)).status, 404);
    // Across the line too: its counter gets a sample.
    assert.equal((await (await fetch(`${worker.url}/v1/data/remote/models/v1/w.bin`)).arrayBuffer()).byteLength, MiB + 1);

    await cli(['release', 'publish', 'llm', '/data/models/v1/', '--version', 'v1', '--mount', `data=${source}`]);
    await cli(['release', 'publish', 'llm', '/data/models/v2/', '--version', 'v2', '--mount', `data=${source}`]);
    await cli(['release', 'promote', 'llm', 'v1', '--channel', 'prod']);
    const metricsPort = await freePort();
    syncMetricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    agent = SyncProcess.start(['llm', '--channel', 'prod', '--interval', '200ms', '--host', 'host1', '--metrics', `127.0.0.1:${metricsPort}`, ...common], releaseDir, join(root, 'agent.log'));
    await waitFor('the agent to switch to v1', async () => (await currentVersion(releaseDir)) === 'v1', 30_000);
    await waitFor('the agent metrics to show the switch', async () => (await sample(syncMetricsUrl, 'fanout_sync_switches_total{release="llm",channel="prod"}')) === 1);
  });

  after(async () => {
    await agent?.kill();
    await worker?.destroy();
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test("a worker's /metrics passes promtool check metrics with no warnings", async () => {
    const text = await scrape(`${worker.url}/metrics`);
    assert.match(text, /^fanout_page_hits_total [1-9]/m);
    assert.match(text, /^fanout_page_misses_total [1-9]/m);
    assert.match(text, /^fanout_request_errors_total\{code="NOT_FOUND"\} 1$/m);
    assert.match(text, /^fanout_line_rate_bytes_per_second\{line="wan"\} 1000000000$/m);
    assert.match(text, /^fanout_line_bytes_total\{line="wan",class="read"\} [1-9]/m);
    const result = await promtool(['check', 'metrics'], text);
    assert.deepEqual(result, { code: 0, output: '' });
  });

  test("a sync agent's /metrics passes promtool check metrics and shows it in sync", async () => {
    const text = await scrape(syncMetricsUrl);
    assert.match(text, /^fanout_sync_behind\{release="llm",channel="prod"\} 0$/m);
    assert.match(text, /^fanout_sync_phase\{phase="idle",release="llm",channel="prod"\} 1$/m);
    assert.deepEqual(await promtool(['check', 'metrics'], text), { code: 0, output: '' });
  });

  test('the alert rules pass promtool check rules and their unit tests', async () => {
    const check = await promtool(['check', 'rules', 'alerts.yml'], undefined, monitoring);
    assert.equal(check.code, 0, check.output);
    assert.doesNotMatch(check.output, /warn/i);
    const unit = await promtool(['test', 'rules', 'alerts.test.yml'], undefined, monitoring);
    assert.equal(unit.code, 0, unit.output);
    assert.match(unit.output, /SUCCESS/);
    const config = await promtool(['check', 'config', 'prometheus.yml'], undefined, monitoring);
    assert.equal(config.code, 0, config.output);
  });

  test('the alerts cover worker down, etcd stale, a taken worker id, ignored member records, hit ratio, line and source budget saturation, checksums, disk full and stuck rollouts', async () => {
    const rules = parseYaml(await readFile(join(monitoring, 'alerts.yml'), 'utf8')) as { groups: { rules: { alert?: string }[] }[] };
    const alerts = rules.groups.flatMap((g) => g.rules.flatMap((r) => (r.alert ? [r.alert] : [])));
    for (const name of ['FanoutWorkerDown', 'FanoutEtcdStale', 'FanoutWorkerIdTaken', 'FanoutMemberRecordsIgnored', 'FanoutHitRatioLow', 'FanoutLineSaturated', 'FanoutSourceBudgetSaturated', 'FanoutChecksumFailures', 'FanoutDiskFull', 'FanoutRolloutStuck']) {
      assert.ok(alerts.includes(name), `${name} in alerts.yml`);
    }
  });

  test('every dashboard query is valid PromQL', async () => {
    const dashboard = JSON.parse(await readFile(join(monitoring, 'grafana-dashboard.json'), 'utf8'));
    const queries = dashboardQueries(dashboard);
    assert.ok(queries.length >= 20);
    // promtool has no query parser of its own: each query becomes a recording rule it checks.
    const rules = { groups: [{ name: 'dashboard', rules: queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: withoutVariables(q.expr) })) }] };
    const file = join(root, 'dashboard-queries.yml');
    await writeFile(file, JSON.stringify(rules));
    const result = await promtool(['check', 'rules', file]);
    assert.equal(result.code, 0, result.output);
  });

  test('every metric the rules and the dashboard use is exported by a worker or a sync agent', async () => {
    const exported = new Set([...exposedNames(await scrape(`${worker.url}/metrics`)), ...exposedNames(await scrape(syncMetricsUrl))]);
    const rules = parseYaml(await readFile(join(monitoring, 'alerts.yml'), 'utf8')) as { groups: { rules: { expr: string }[] }[] };
    const dashboard = JSON.parse(await readFile(join(monitoring, 'grafana-dashboard.json'), 'utf8'));
    const used = [
      ...rules.groups.flatMap((g) => g.rules.flatMap((r) => metricNames(r.expr).map((name) => ({ name, where: `alerts.yml: ${r.expr.trim().slice(0, 60)}` })))),
      ...dashboardQueries(dashboard).flatMap((q) => metricNames(q.expr).map((name) => ({ name, where: `dashboard panel "${q.title}"` }))),
    ];
    assert.ok(used.length > 30);
    const missing = used.filter((u) => !exported.has(u.name));
    assert.deepEqual(missing, []);
  });

  test('a worker cut off from etcd reports its membership as stale until etcd is back', async () => {
    assert.equal(await sample(`${worker.url}/metrics`, 'fanout_membership_stale'), 0);
    etcd.kill();
    await waitFor('fanout_membership_stale 1', async () => (await sample(`${worker.url}/metrics`, 'fanout_membership_stale')) === 1, 30_000);
    await etcd.restart();
    await waitFor('fanout_membership_stale 0', async () => (await sample(`${worker.url}/metrics`, 'fanout_membership_stale')) === 0, 30_000);
  });

  test('a sync agent that cannot stage the promoted version reports itself behind and in error, keeping its version', async () => {
    await worker.kill(); // the cluster the agent fetches from is gone
    const result = await fanout(['release', 'promote', 'llm', 'v2', '--channel', 'prod', '--etcd', etcd.endpoint, '--json']);
    assert.equal(result.code, 0, `${result.stdout}${result.stderr}`);
    const labels = '{release="llm",channel="prod"}';
    await waitFor('the agent to report itself behind', async () => (await sample(syncMetricsUrl, `fanout_sync_behind${labels}`)) === 1, 30_000);
    await waitFor('the agent to report an error phase', async () => (await sample(syncMetricsUrl, 'fanout_sync_phase{phase="error",release="llm",channel="prod"}')) === 1, 30_000);
    assert.ok((await sample(syncMetricsUrl, `fanout_sync_failed_rounds_total${labels}`))! > 0);
    await waitFor('time behind to grow', async () => (await sample(syncMetricsUrl, `fanout_sync_behind_seconds${labels}`))! > 0);
    assert.equal(await currentVersion(releaseDir), 'v1');
  });
});
