import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import type { LineStatus } from '../../src/core/types.js';
import { rate } from '../../src/worker/dashboard/app/format.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { fanoutJson } from '../harness/cli.js';
import { promtool } from '../harness/promtool.js';
import { SyncProcess, currentVersion } from '../harness/release.js';
import { openBrowserPage } from './browser.js';

const MiB = 1024 * 1024;
const LINE_RATE = 16 * MiB;
/** The page refreshes every 2 s; bounds for conditions, not timings. */
const PAGE_WAIT_MS = 30_000;

async function put(root: string, rel: string, data: Buffer | string): Promise<void> {
  await mkdir(dirname(join(root, rel)), { recursive: true });
  await writeFile(join(root, rel), data);
}

/**
 * What issue 12 asks of the dashboard once lines (issue 11) and datacenters exist: the line a
 * mount crosses, with its rate and the shares leased now, and a rollout grouped by datacenter,
 * in a real browser against real workers, etcd and sync agents. Also: /metrics of a worker with
 * a line configured passes promtool (the line gauges included).
 */
describe('the dashboard with a line and two datacenters, in a headless browser', () => {
  let etcd: EtcdServer;
  let workers: WorkerProcess[];
  let root: string;
  let source: string;
  let browser: Browser;
  let page: Page;
  const agents: SyncProcess[] = [];
  const consoleErrors: string[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-ui-lines-'));
    source = join(root, 'source');
    await put(source, 'big.bin', randomBytes(4 * MiB + 3));
    await put(source, 'idx/v1/shard.bin', randomBytes(MiB + 5));
    etcd = await startEtcd();
    workers = await startCluster(2, {
      etcd: etcd.endpoint,
      lines: { wan: { rate: LINE_RATE, preloadFloor: LINE_RATE / 8 } },
      mounts: { data: { uri: source, line: 'wan' } },
      pageSize: '1MiB',
      statTtl: '100ms',
    });
    const res = await fetch(`${workers[0]!.url}/v1/data/data/big.bin`);
    assert.equal((await res.arrayBuffer()).byteLength, 4 * MiB + 3);
    ({ browser, page } = await openBrowserPage(consoleErrors));
  });

  after(async () => {
    await Promise.all(agents.map((a) => a.kill()));
    await browser?.close();
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test("a mount's chart names its line, the line's rate and the shares its members lease now, as /v1/status says; the line has its own chart", async () => {
    await page.goto(`${workers[0]!.url}/ui`);
    const label = page.locator('[data-chart="source:data"] .line');
    let leased = 0;
    await waitFor(
      'the line label to match the members’ /v1/status',
      async () => {
        const lines = await Promise.all(
          workers.map(async (w) => ((await (await fetch(`${w.url}/v1/status`)).json()) as { lines: LineStatus[] }).lines.find((l) => l.line === 'wan')!),
        );
        const shares = lines.reduce((sum, l) => sum + l.share, 0);
        const reads = lines.reduce((sum, l) => sum + l.queue.read.requests, 0);
        const preloads = lines.reduce((sum, l) => sum + l.queue.preload.requests, 0);
        leased = shares;
        const expected = `line wan: leased ${rate(shares)} of ${rate(LINE_RATE)}, waiting ${reads} reads, ${preloads} preloads`;
        return (await label.getAttribute('data-line')) === 'wan' && (await label.textContent()) === expected;
      },
      PAGE_WAIT_MS,
    );
    // The leases never hand out more than the line's rate between them.
    assert.ok(leased <= LINE_RATE, `leased ${leased} of ${LINE_RATE}`);
    // The mount's source rate is charted live, as for a mount without a line.
    await waitFor('a source chart with a line', async () => (await page.locator('[data-chart="source:data"] polyline').count()) > 0, PAGE_WAIT_MS);
    // The line has a chart of its own: bytes/s across it against its rate, naming its mounts.
    const lineChart = page.locator('[data-chart="line:wan"]');
    await waitFor('the line chart', async () => (await lineChart.locator('polyline').count()) > 0, PAGE_WAIT_MS);
    assert.equal(await lineChart.locator('.title strong').textContent(), 'line wan');
    assert.equal(await lineChart.locator('.limit').getAttribute('data-value'), String(LINE_RATE));
    assert.equal(await lineChart.locator('.line').textContent(), 'mounts: /data');
    assert.deepEqual(consoleErrors, []);
  });

  test('a rollout to hosts in two datacenters is grouped by datacenter, and each host names its datacenter', async () => {
    const common = ['--etcd', etcd.endpoint, '--endpoint', workers[0]!.url];
    await fanoutJson(['release', 'publish', 'idx', '/data/idx/v1/', '--version', 'v1', '--mount', `data=${source}`, ...common]);
    await fanoutJson(['release', 'promote', 'idx', 'v1', '--channel', 'prod', ...common]);
    const hosts = [
      { host: 'host-a', datacenter: 'dc-a' },
      { host: 'host-b', datacenter: 'dc-b' },
    ];
    for (const { host, datacenter } of hosts) {
      agents.push(
        SyncProcess.start(['idx', '--channel', 'prod', '--datacenter', datacenter, '--interval', '300ms', '--host', host, ...common], join(root, host), join(root, `${host}.log`)),
      );
    }
    await waitFor('both hosts on v1', async () => (await Promise.all(hosts.map((h) => currentVersion(join(root, h.host))))).every((v) => v === 'v1'), 90_000);
    const release = page.locator('[data-release="idx"]');
    const group = (dc: string) => release.locator('tr[data-group]').filter({ has: page.locator(`td[data-field="datacenter"]:text-is("${dc}")`) });
    await waitFor(
      'one idle group on v1 per datacenter',
      async () => {
        for (const { datacenter } of hosts) {
          const row = group(datacenter);
          if ((await row.count()) !== 1) return false;
          if ((await row.locator('td[data-field="phase"]').textContent()) !== 'idle') return false;
          if ((await row.locator('td[data-field="current"]').textContent()) !== 'v1') return false;
          if ((await row.locator('td[data-field="hosts"]').getAttribute('data-value')) !== '1') return false;
        }
        return (await release.locator('tr[data-group]').count()) === 2;
      },
      PAGE_WAIT_MS,
    );
    // Datacenters come in order, so a fleet reads top to bottom by datacenter.
    assert.deepEqual(await release.locator('tr[data-group] td[data-field="datacenter"]').allTextContents(), ['dc-a', 'dc-b']);
    await release.locator('details summary').click();
    for (const { host, datacenter } of hosts) {
      await waitFor(`${host} listed in ${datacenter}`, async () => (await release.locator(`tr[data-host="${host}"] td[data-field="datacenter"]`).textContent()) === datacenter, PAGE_WAIT_MS);
    }
    assert.deepEqual(consoleErrors, []);
  });

  test('/metrics of a worker with a line passes promtool check metrics with no warnings, line gauges included', async () => {
    const text = await (await fetch(`${workers[0]!.url}/metrics`)).text();
    assert.match(text, /^fanout_line_rate_bytes_per_second\{line="wan"\} 16777216$/m);
    assert.match(text, /^fanout_line_share_bytes_per_second\{line="wan"\} \d/m);
    assert.match(text, /^fanout_line_queue_requests\{line="wan",class="read"\} \d/m);
    assert.deepEqual(await promtool(['check', 'metrics'], text), { code: 0, output: '' });
  });
});
