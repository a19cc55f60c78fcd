import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../harness/ports.js';
import { Origin } from '../harness/origin.js';
import { WorkerProcess } from '../harness/workers.js';
import { get, page, stat } from './helpers.js';

/**
 * A worker reading its own cold pages through the cluster (/v1/data, the S3 gateway) took each
 * through an HTTP request to its own /v1/page over loopback (found by a fault hunt: two fds per
 * page in flight, and a worker at its fd limit failed its own cold reads). It now joins the page
 * service's fill in-process: the same single flight, the same answers.
 */

const PAGE = 1024 * 1024;

describe("a worker's cold reads of its own pages", () => {
  let dir: string;
  const big = randomBytes(5 * PAGE + 100); // 6 pages, the last a short one

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-own-pages-'));
    await writeFile(join(dir, 'big.bin'), big);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('a cold /v1/data read of 6 pages it owns asks no /v1/page of itself: each page is one fill, read once from the source', async () => {
    const worker = await WorkerProcess.start({ id: 'w-own', pageSize: PAGE, mounts: { data: dir } });
    try {
      const cold = await get(`${worker.url}/v1/data/data/big.bin`);
      assert.equal(cold.status, 200, `${cold.status} ${cold.code} ${cold.message}`);
      assert.ok(cold.body.equals(big), 'the bytes of the file');
      const m = await worker.metrics();
      // Before: 6 fill sends, one per page: each cold page was a /v1/page response streamed from
      // its fill, to this worker itself (a loopback connection, two fds, an HTTP parse each side).
      assert.equal(m.fanout_fill_sends_total ?? 0, 0, 'no /v1/page response streamed from a fill');
      assert.equal(m.fanout_source_reads_total, 6, 'one source read per page');
      assert.equal(m.fanout_page_misses_total, 6);
      const warm = await get(`${worker.url}/v1/data/data/big.bin`);
      assert.equal(warm.status, 200);
      assert.ok(warm.body.equals(big));
      assert.equal((await worker.metrics()).fanout_source_reads_total, 6, 'the pages were stored by their fills');
    } finally {
      await worker.destroy();
    }
  });
});

describe('a cold page this worker owns, read by /v1/data while /v1/page readers wait for it too', () => {
  let origin: Origin;
  let worker: WorkerProcess;
  const data = randomBytes(256 * 1024);

  before(async () => {
    origin = await Origin.start();
    await origin.put('slow.bin', data);
    await origin.put('hung.bin', randomBytes(64 * 1024));
    worker = await WorkerProcess.start({ id: 'w-own-join', pageSize: PAGE, mounts: { web: origin.url }, statTtl: '10m', timeouts: { sourceFirstByte: '5s' } });
  });
  after(async () => {
    await worker?.destroy();
    await origin?.close();
  });

  const gets = (path: string) => origin.counters.log.filter((r) => r.method === 'GET' && r.path === path).length;

  test('they share one source read; the /v1/data reader leaving does not end the fill the /v1/page reader waits for', async () => {
    const info = (await stat(worker, '/web/slow.bin')).info!;
    // 8 s to send the page: the fill is in flight for all the steps below (checked, not assumed).
    origin.behave({ bytesPerSecond: 32 * 1024 }, 'slow.bin');
    const leaving = new AbortController();
    const data1 = fetch(`${worker.url}/v1/data/web/slow.bin`, { signal: leaving.signal }).then((res) => res.arrayBuffer());
    data1.catch(() => {});
    await waitFor('the fill started', async () => (await worker.metrics()).fanout_source_reads_inflight === 1);
    const waiter = page(worker, '/web/slow.bin', info.version, info.size, 0);
    await waitFor('the /v1/page reader joined it', async () => (await worker.metrics()).fanout_page_misses_total === 2);
    leaving.abort();
    await assert.rejects(data1);
    const answer = await waiter;
    assert.equal(answer.status, 200, `${answer.status} ${answer.code} ${answer.message}`);
    assert.ok(answer.body.equals(data));
    assert.equal(gets('slow.bin'), 1, 'one source read for both readers');
    assert.equal((await worker.metrics()).fanout_fill_sends_total, 1, 'the /v1/page reader only');
  });

  test("a source that fails the fill fails both readers with the fill's code, from one source read", async () => {
    const info = (await stat(worker, '/web/hung.bin')).info!;
    origin.behave({ hang: 'nothing' }, 'hung.bin');
    const data1 = get(`${worker.url}/v1/data/web/hung.bin`);
    await waitFor('the fill started', async () => (await worker.metrics()).fanout_source_reads_inflight === 1);
    const waiter = page(worker, '/web/hung.bin', info.version, info.size, 0);
    await waitFor('the /v1/page reader joined it', async () => (await worker.metrics()).fanout_page_misses_total === 4);
    const [viaData, viaPage] = await Promise.all([data1, waiter]);
    assert.equal(viaPage.status, 502, `${viaPage.status} ${viaPage.code} ${viaPage.message}`);
    assert.equal(viaData.status, viaPage.status, `${viaData.status} ${viaData.code} ${viaData.message}`);
    assert.equal(viaData.code, viaPage.code);
    assert.equal(gets('hung.bin'), 1, 'one source read: the /v1/page reader joined the fill');
  });
});
