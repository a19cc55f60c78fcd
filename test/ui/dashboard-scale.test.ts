import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import type { Browser, Page } from 'playwright-core';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { WorkerProcess, repoRoot } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { openBrowserPage } from './browser.js';

const GiB = 1024 ** 3;
const FAKE_MEMBERS = 99;
/** Of the fake members, these never answer (a hung host): the page must show them down and go on. */
const HUNG = new Set(Array.from({ length: 10 }, (_, i) => `f${String(i * 9 + 1).padStart(3, '0')}`));
const HOSTS = 1000;
const INTERVAL_MS = 5_000;

/**
 * Answers /ID/v1/status/dashboard as 99 members would (one loopback server, the member id in the
 * path), with 15 minutes of samples; the hung ones never answer.
 */
const hanging = { on: true };

function fakeMembers(): { server: Server; held: Set<ServerResponse> } {
  const held = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    const [, id] = (req.url ?? '').split('/');
    if (!id || (HUNG.has(id) && hanging.on)) {
      held.add(res);
      res.on('close', () => held.delete(res));
      return;
    }
    const since = Number(new URL(req.url!, 'http://x').searchParams.get('since') ?? 0);
    const n = Number(id.slice(1));
    const now = Math.floor(Date.now() / INTERVAL_MS) * INTERVAL_MS;
    const samples = [];
    for (let t = Math.max(since + INTERVAL_MS, now - 15 * 60_000 + INTERVAL_MS); t <= now; t += INTERVAL_MS) {
      const wave = Math.sin(t / 60_000 + n) + 1;
      samples.push({ t, ms: INTERVAL_MS, hits: 40, misses: 10, served: 50e6 * wave, source: { data: 2e6 * wave }, budget: { data: 1e6 }, fills: 2, used: n * GiB });
    }
    const body = JSON.stringify({
      status: { id, url: '', capacity: 100 * GiB, used: n * GiB, pages: n * 256, hits: 4000 + n, misses: 1000, bytesServed: 0, bytesFromSource: 0, evictions: 0, inflightSourceReads: 2, sourceRates: { data: 1e6 } },
      activity: { fills: { count: 2, listed: [{ mount: 'data', path: `models/shard-${n}.bin`, index: 3, from: 'source', length: 4 << 20, received: (n * 37_000) % (4 << 20) }] }, loads: [] },
      history: { intervalMs: INTERVAL_MS, samples },
    });
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  return { server, held };
}

describe('the dashboard with 100 workers and 1,000 hosts', () => {
  let etcd: EtcdServer;
  let worker: WorkerProcess;
  let fake: ReturnType<typeof fakeMembers>;
  let browser: Browser;
  let page: Page;
  let source: string;
  const consoleErrors: string[] = [];

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-ui-scale-'));
    await writeFile(join(source, 'a.txt'), 'scale\n');
    fake = fakeMembers();
    await new Promise<void>((resolve) => fake.server.listen(0, '127.0.0.1', resolve));
    const port = (fake.server.address() as { port: number }).port;
    etcd = await startEtcd();
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      // Under a lease, as workers register: a record without one is no member (records.ts).
      const lease = client.lease(3600, { autoKeepAlive: false });
      for (let i = 1; i <= FAKE_MEMBERS; i++) {
        const id = `f${String(i).padStart(3, '0')}`;
        await lease.put(`/fanout/default/members/${id}`).value(JSON.stringify({ id, url: `http://127.0.0.1:${port}/${id}`, capacity: 100 * GiB }));
      }
      const releases = '/fanout/releases/llm/';
      const versionFields = { name: 'llm', mount: 'data', prefix: 'llm/', manifest: 'llm/.fanout/manifest.json', manifestSha256: 'a'.repeat(64), pageSize: 4 * 1024 * 1024, files: 12, pages: 10_000, uniquePages: 10_000 };
      await client.put(`${releases}versions/v1`).value(JSON.stringify({ ...versionFields, version: 'v1', bytes: 40 * GiB, createdAt: '2026-12-01T10:00:00.000Z' }));
      await client.put(`${releases}versions/v2`).value(JSON.stringify({ ...versionFields, version: 'v2', bytes: 41 * GiB, createdAt: '2026-12-02T07:00:00.000Z' }));
      await client.put(`${releases}channels/prod`).value(JSON.stringify({ version: 'v2', history: ['v1'], updatedAt: '2026-12-02T07:05:00.000Z' }));
      for (let i = 0; i < HOSTS; i++) {
        const host = `host-${String(i).padStart(4, '0')}`;
        const phase = i % 50 === 7 ? 'error' : i % 10 === 3 ? 'staging' : 'idle';
        const state = {
          host, channel: 'prod', dir: '/srv/llm', current: phase === 'idle' ? 'v2' : 'v1', target: 'v2', phase,
          bytesDone: phase === 'staging' ? (i % 41) * GiB : 0, bytesTotal: phase === 'staging' ? 41 * GiB : 0, bytesLocal: 0, bytesFetched: 0,
          error: phase === 'error' ? 'DISK_FULL: no space left on /srv/llm' : null, updatedAt: new Date().toISOString(),
        };
        await client.put(`${releases}agents/${host}`).value(JSON.stringify(state));
      }
    } finally {
      client.close();
    }
    worker = await WorkerProcess.start({ id: 'w000', mounts: { data: source }, membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3 } } });
    await waitFor('the worker to see 100 members', async () => ((await (await fetch(`${worker.url}/v1/cluster`)).json()) as { members: unknown[] }).members.length === 100);
    ({ browser, page } = await openBrowserPage(consoleErrors));
  });

  after(async () => {
    await browser?.close();
    for (const res of fake?.held ?? []) res.destroy();
    await new Promise((r) => fake?.server.close(r));
    await worker?.destroy();
    await etcd?.stop();
    await rm(source, { recursive: true, force: true });
  });

  const rounds = async () => Number((await page.locator('body').getAttribute('data-rounds')) ?? 0);

  test('every member has a row, hung ones are down, and a steady refresh re-creates no row', async () => {
    await page.goto(`${worker.url}/ui`);
    await waitFor('100 rows, 10 down', async () => (await page.locator('#members tbody tr').count()) === 100 && (await page.locator('#members td.health-down').count()) === HUNG.size, 60_000);
    assert.equal(await page.locator('tr[data-member="f001"] td[data-field="health"]').textContent(), 'down');
    assert.equal(await page.locator('tr[data-member="f002"] td[data-field="health"]').textContent(), 'up');
    // Count rows added or removed over two more refreshes: figures change in place, rows stay.
    await page.evaluate(() => {
      const w = window as unknown as { rowChanges: number };
      w.rowChanges = 0;
      new MutationObserver((records) => {
        for (const r of records) w.rowChanges += [...r.addedNodes, ...r.removedNodes].filter((n) => n.nodeName === 'TR').length;
      }).observe(document.querySelector('#members tbody')!, { childList: true });
    });
    const start = await rounds();
    await waitFor('two more refreshes', async () => (await rounds()) >= start + 2, 60_000);
    assert.equal(await page.evaluate(() => (window as unknown as { rowChanges: number }).rowChanges), 0);
    const roundMs = Number(await page.locator('body').getAttribute('data-round-ms'));
    const heap = await page.evaluate(() => (performance as unknown as { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? 0);
    const nodes = await page.evaluate(() => document.getElementsByTagName('*').length);
    // Figures for the report (not asserted: the machine is shared).
    console.log(`# scale: round ${roundMs} ms with ${HUNG.size} hung members of 100; JS heap ${(heap / 2 ** 20).toFixed(1)} MiB; ${nodes} DOM elements`);
    assert.deepEqual(consoleErrors, []);
  });

  test('1,000 hosts are a few summary rows with their errors; the full list comes when opened', async () => {
    const release = page.locator('[data-release="llm"]');
    await waitFor('the rollout summary', async () => (await release.locator('.rollout').getAttribute('data-total')) === String(HOSTS), 30_000);
    assert.ok((await release.locator('table tr[data-group]').count()) <= 5, 'hosts grouped by channel, version and phase');
    assert.equal(await release.locator('.errors li').count(), 20);
    assert.equal(await release.locator('tr[data-host]').count(), 0, 'no host rows while the list is closed');
    await page.screenshot({ path: join(repoRoot, 'docs/images/dashboard-scale.png'), fullPage: true });
    await release.locator('details summary').click();
    await waitFor('1,000 host rows', async () => (await release.locator('tr[data-host]').count()) === HOSTS, 30_000);
    assert.deepEqual(consoleErrors, []);
  });

  test('hung members that answer again come back up', async () => {
    hanging.on = false;
    await waitFor('all 100 up', async () => (await page.locator('#members td.health-up').count()) === 100, 60_000);
    const start = await rounds();
    await waitFor('two more refreshes', async () => (await rounds()) >= start + 2, 60_000);
    const roundMs = Number(await page.locator('body').getAttribute('data-round-ms'));
    console.log(`# scale: round ${roundMs} ms with all 100 members answering`);
    assert.match((await page.locator('#members-count').textContent()) ?? '', /100 of 100 members up/);
    assert.deepEqual(consoleErrors, []);
  });
});
