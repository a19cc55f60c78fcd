import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startCluster, repoRoot, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { fanoutJson } from '../harness/cli.js';
import { SyncProcess, currentVersion } from '../harness/release.js';
import { openBrowserPage } from './browser.js';

const MiB = 1024 * 1024;
/** The page refreshes every 2 s; the history samples every 5 s. Bounds for conditions, not timings. */
const PAGE_WAIT_MS = 30_000;

async function put(root: string, rel: string, data: Buffer | string): Promise<void> {
  await mkdir(dirname(join(root, rel)), { recursive: true });
  await writeFile(join(root, rel), data);
}

interface Status {
  id: string;
  capacity: number;
  used: number;
  pages: number;
  hits: number;
  misses: number;
}

describe('the dashboard in a headless browser', () => {
  let etcd: EtcdServer;
  let workers: WorkerProcess[];
  let root: string;
  let source: string;
  let browser: Browser;
  let page: Page;
  let agent: SyncProcess | undefined;
  const consoleErrors: string[] = [];

  /** The text of a cell of a member's row. */
  const cell = (member: string, field: string) => page.locator(`tr[data-member="${member}"] td[data-field="${field}"]`);
  const waitForPage = (what: string, check: () => Promise<boolean>) => waitFor(what, check, PAGE_WAIT_MS);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-ui-'));
    source = join(root, 'source');
    await put(source, 'big.bin', randomBytes(6 * MiB + 17));
    await put(source, 'llm/v1/model.bin', randomBytes(20 * MiB));
    await put(source, 'llm/v1/config.json', '{"layers": 2}\n');
    etcd = await startEtcd();
    workers = await startCluster(3, { etcd: etcd.endpoint, mounts: { data: { uri: source, sourceRate: '64MiB' } }, pageSize: '1MiB', statTtl: '100ms' });
    ({ browser, page } = await openBrowserPage(consoleErrors));
  });

  after(async () => {
    await agent?.kill();
    await browser?.close();
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('loads with no console errors; every member is up and its figures are those of /v1/status', async () => {
    // Traffic first: misses, then hits, spread over the three workers' pages.
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${workers[0]!.url}/v1/data/data/big.bin`);
      assert.equal((await res.arrayBuffer()).byteLength, 6 * MiB + 17);
    }
    await page.goto(`${workers[0]!.url}/ui`);
    assert.equal(await page.title(), 'fanout');
    for (const w of workers) {
      await waitForPage(`${w.id}'s row to match its /v1/status`, async () => {
        const status = (await (await fetch(`${w.url}/v1/status`)).json()) as Status;
        const shown = {
          health: await cell(w.id, 'health').textContent(),
          used: await cell(w.id, 'used').getAttribute('data-value'),
          capacity: await cell(w.id, 'capacity').getAttribute('data-value'),
          pages: await cell(w.id, 'pages').getAttribute('data-value'),
          hitRatio: await cell(w.id, 'hitRatio').getAttribute('data-value'),
        };
        const ratio = status.hits + status.misses > 0 ? String(status.hits / (status.hits + status.misses)) : '';
        return (
          shown.health === 'up' &&
          shown.used === String(status.used) &&
          shown.capacity === String(status.capacity) &&
          shown.pages === String(status.pages) &&
          shown.hitRatio === ratio
        );
      });
    }
    // Every page was read once from the source (7 pages of 1 MiB) and the cluster holds them.
    const statuses = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/status`)).json()) as Status));
    assert.equal(statuses.reduce((sum, s) => sum + s.pages, 0), 7);
    assert.match((await page.locator('#summary').textContent()) ?? '', /7 pages/);
    // The source chart of the mount fills in as samples arrive (every 5 s) and shows the budget.
    await waitForPage('a source chart with a line', async () => (await page.locator('[data-chart="source:data"] polyline').count()) > 0);
    // Each of the 3 workers holds a third of the budget (rounded down): their sum is the budget, to a few bytes.
    const budget = Number(await page.locator('[data-chart="source:data"] .limit').getAttribute('data-value'));
    assert.ok(Math.abs(budget - 64 * MiB) <= 3, `budget shown ${budget}`);
    assert.deepEqual(consoleErrors, []);
  });

  test('a promoted release appears with its channel, and a sync agent’s progress while it stages', async () => {
    const common = ['--etcd', etcd.endpoint, '--endpoint', workers[0]!.url];
    await fanoutJson(['release', 'publish', 'llm', '/data/llm/v1/', '--version', 'v1', '--mount', `data=${source}`, ...common]);
    await fanoutJson(['release', 'promote', 'llm', 'v1', '--channel', 'prod', ...common]);
    const release = page.locator('[data-release="llm"]');
    await waitForPage('channel prod at v1 on the page', async () => (await release.locator('tr[data-channel="prod"] td[data-field="version"]').textContent()) === 'v1');
    // Open the full host list before the agent starts: its rows come while the list is open.
    await release.locator('details summary').click();
    const dir = join(root, 'host1');
    // 20 MiB at 2 MiB/s: about ten seconds of staging for the page to show.
    agent = SyncProcess.start(['llm', '--channel', 'prod', '--interval', '200ms', '--host', 'host1', '--rate', '2MiB', ...common], dir, join(root, 'agent.log'));
    const host = release.locator('tr[data-host="host1"]');
    await waitForPage('host1 staging with a progress figure', async () => {
      const phase = await host.locator('td[data-field="phase"]').textContent();
      const progress = Number(await host.locator('td[data-field="progress"]').getAttribute('data-value'));
      return phase === 'staging' && progress > 0 && progress < 1;
    });
    assert.match((await host.locator('td[data-field="progress"]').textContent()) ?? '', /\d+\.\d%/);
    assert.equal(await release.locator('.rollout').getAttribute('data-staging'), '1');
    await page.screenshot({ path: join(repoRoot, 'docs/images/dashboard.png'), fullPage: true });
    await waitFor('the agent on v1', async () => (await currentVersion(dir)) === 'v1', 90_000);
    await waitForPage('host1 idle on v1 on the page', async () =>
      (await host.locator('td[data-field="phase"]').textContent()) === 'idle' && (await host.locator('td[data-field="current"]').textContent()) === 'v1',
    );
    assert.match((await release.locator('.rollout').textContent()) ?? '', /1 host: 1 on their channel's version/);
    assert.deepEqual(consoleErrors, []);
  });

  test('a stopped worker shows as down while the others stay up', async () => {
    const stopped = workers[2]!;
    stopped.pause();
    try {
      await waitForPage(`${stopped.id} down on the page`, async () => (await cell(stopped.id, 'health').textContent()) === 'down');
      assert.equal(await cell(workers[1]!.id, 'health').textContent(), 'up');
      assert.match((await page.locator('#members-count').textContent()) ?? '', /2 of 3 members up/);
      await page.screenshot({ path: join(repoRoot, 'docs/images/dashboard-down.png'), fullPage: true });
    } finally {
      await stopped.kill();
    }
    assert.deepEqual(consoleErrors, []);
  });
});
