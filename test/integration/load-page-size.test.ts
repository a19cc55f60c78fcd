import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { fanout } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { waitFor } from '../harness/ports.js';
import { restartWithPageSize, startCluster, TEST_ADMIN_TOKEN, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
// Enough pages that each of two workers surely owns some whatever the file's version.
const PAGES = 32;

/**
 * `fanout load` while the cluster's workers restart with another pageSize, one by one: the CLI
 * plans the pages in the page size of the worker it asked (1 MiB), and sends each worker the
 * indexes it owns. A worker already restarted (2 MiB) took each index for one of its own pages:
 * it loaded other spans of the file than planned, counted as loaded (35,651,661 bytes "loaded"
 * of a 33,554,509-byte file), left the planned pages unloaded, and failed the indexes past its
 * last page with RANGE_NOT_SATISFIABLE "page 32 is outside a file of 33554509 bytes". The load
 * call now says its page size, and such a worker refuses each page as a page request would.
 */
describe('fanout load mid-way through a rolling restart to another pageSize', () => {
  let etcd: EtcdServer;
  let source: string;
  let workers: WorkerProcess[] = [];
  const data = randomBytes(PAGES * MiB + 77);

  before(async () => {
    etcd = await startEtcd();
    source = await mkdtemp(join(tmpdir(), 'fanout-load-ps-'));
    await writeFile(join(source, 'f.bin'), data);
    workers = await startCluster(2, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: '1MiB' });
  });

  after(async () => {
    await Promise.all(workers.map((w) => w.destroy()));
    await etcd?.stop();
    if (source) await rm(source, { recursive: true, force: true });
  });

  /** The report of `fanout load /data/f.bin` through `endpoint` (NDJSON: the last line), and its exit code. */
  const load = async (endpoint: string) => {
    const r = await fanout(['load', '/data/f.bin', '--endpoint', endpoint, '--json'], { FANOUT_TOKEN: TEST_ADMIN_TOKEN });
    const last = r.stdout.toString().trim().split('\n').pop()!;
    try {
      return { code: r.code, report: JSON.parse(last) as { pages: number; loaded: number; bytesLoaded: number; present: number; failed: { index: number; code: string; message: string }[] } };
    } catch {
      throw new Error(`fanout load printed no report (exit ${r.code}): ${last} ${r.stderr}`);
    }
  };
  const held = async (w: WorkerProcess) => ((await (await fetch(`${w.url}/v1/status`)).json()) as { pages: number }).pages;

  test('mixed sizes: the restarted worker refuses the pages planned in the old size (PAGE_SIZE_MISMATCH, each named); after the roll a second load finishes the job', { timeout: 120_000 }, async () => {
    const [w1, w2] = workers as [WorkerProcess, WorkerProcess];
    await restartWithPageSize(w2, '2MiB');
    await waitFor('w2 back in every ring', async () => {
      const views = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/cluster`)).json()) as { members: unknown[] }));
      return views.every((v) => v.members.length === 2);
    });
    // The plan is made in w1's page size (1 MiB): the pages each worker owns by the ring.
    const client = new FanoutClient({ endpoint: w1.url });
    const owners = await (async () => {
      try {
        const ring = new HashRing((await client.cluster(true)).members);
        const file = await client.stat('/data/f.bin');
        return Array.from({ length: PAGES + 1 }, (_, index) => ring.owners(pageKey({ mount: 'data', path: file.path, version: file.version, size: file.size, index }, MiB), 1)[0]!.id);
      } finally {
        await client.close();
      }
    })();
    const ofW2 = owners.flatMap((id, index) => (id === 'w2' ? [index] : []));
    assert.ok(ofW2.length > 0 && ofW2.length < owners.length, `each worker owns pages: ${owners.join(' ')}`);

    const mixed = await load(w1.url);
    assert.equal(mixed.code, 1, 'pages failed: the load says so');
    assert.deepEqual(mixed.report.failed.map((f) => f.index).sort((a, b) => a - b), ofW2, `the pages w2 owns fail, and only they: ${JSON.stringify(mixed.report.failed.slice(0, 3))}`);
    for (const f of mixed.report.failed) {
      assert.equal(f.code, 'PAGE_SIZE_MISMATCH', JSON.stringify(f));
      assert.match(f.message, /this worker's pages are 2097152 bytes, the request counts pages of 1048576/);
    }
    assert.equal(mixed.report.loaded, owners.length - ofW2.length, 'w1 loaded its pages');
    assert.ok(mixed.report.bytesLoaded <= data.length, `no more bytes loaded than the file has: ${mixed.report.bytesLoaded}`);
    assert.equal(await held(w2), 0, 'w2 loaded no page of its own size under the plan\'s indexes');

    // The roll ends (w1 at 2 MiB too): the same command loads the file in the new size.
    await restartWithPageSize(w1, '2MiB');
    await waitFor('w1 back in every ring', async () => {
      const views = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/cluster`)).json()) as { members: unknown[] }));
      return views.every((v) => v.members.length === 2);
    });
    const done = await load(w1.url);
    assert.equal(done.code, 0, JSON.stringify(done.report.failed.slice(0, 3)));
    assert.equal(done.report.pages, Math.ceil(data.length / (2 * MiB)));
    assert.equal(done.report.bytesLoaded, data.length);
    assert.deepEqual(done.report.failed, []);
  });
});
