import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { waitFor } from '../harness/ports.js';
import { startCluster, TEST_ADMIN_TOKEN, WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
const PAGES = 16;

/** The owner of each page of /data/f.bin (`size` bytes, 1 MiB pages) by the ring a worker at `url` sees. */
async function pageOwners(url: string, size: number): Promise<string[]> {
  const info = (await (await fetch(`${url}/v1/cluster`)).json()) as { members: { id: string; url: string; capacity: number }[] };
  const { version } = (await (await fetch(`${url}/v1/stat/data/f.bin`)).json()) as { version: string };
  const ring = new HashRing(info.members);
  return Array.from({ length: PAGES }, (_, index) => ring.owners(pageKey({ mount: 'data', path: 'f.bin', version, size, index }, MiB), 1)[0]!.id);
}

/**
 * A worker configured with another pageSize joins the etcd prefix of a running cluster (a
 * mistyped config, a half-rolled-out change): it takes its share of every ring and refuses
 * each page counted in the cluster's size. Found by a fault hunt: the workers relaying to it
 * passed the refusal on, so every read through a correctly configured worker failed with
 * PAGE_SIZE_MISMATCH while the source was there. They read the source instead now.
 */
describe('a worker with another pageSize joins the cluster through etcd', () => {
  let etcd: EtcdServer;
  let source: string;
  let workers: WorkerProcess[] = [];
  let odd: WorkerProcess | undefined;
  const data = randomBytes(PAGES * MiB);

  before(async () => {
    etcd = await startEtcd();
    source = await mkdtemp(join(tmpdir(), 'fanout-pagesize-join-'));
    await writeFile(join(source, 'f.bin'), data);
    workers = await startCluster(2, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: '1MiB' });
    odd = await WorkerProcess.start({ id: 'odd', mounts: { data: source }, pageSize: '2MiB', membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3 } } });
    await waitFor('the cluster to list the odd worker', async () => {
      const views = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/cluster`)).json()) as { members: unknown[] }));
      return views.every((v) => v.members.length === 3);
    });
  });

  after(async () => {
    await Promise.all([...workers, odd].map((w) => w?.destroy()));
    await etcd?.stop();
    await rm(source, { recursive: true, force: true });
  });

  test('reads through the workers of the cluster’s page size give the file, the odd worker’s pages read from the source', { timeout: 120_000 }, async () => {
    const owners = await pageOwners(workers[0]!.url, data.length);
    assert.ok(owners.includes('odd'), 'the odd worker owns pages of the file');

    for (const worker of workers) {
      const client = new FanoutClient({ endpoint: worker.url, hedge: 'off' });
      try {
        const parts: Buffer[] = [];
        for await (const chunk of await client.createReadStream('/data/f.bin')) parts.push(chunk as Buffer);
        assert.ok(Buffer.concat(parts).equals(data), `the file's bytes through ${worker.id}`);
      } finally {
        await client.close();
      }
    }
    const metrics = await Promise.all(workers.map(async (w) => (await fetch(`${w.url}/metrics`)).text()));
    assert.ok(metrics.some((text) => /^fanout_relay_source_reads_total\{reason="owner_page_size"\} [1-9]/m.test(text)), 'the relays read the odd worker’s pages from the source, and count it');
  });
});

/**
 * A worker configured with another auth.clusterSecret joins the etcd prefix: it refuses the
 * cluster's peer requests with 403, and the cluster refuses its. Found by a fault hunt: a 403
 * from a member counted as definitive, so every `/v1/data` read of a file with pages it owns
 * failed through every other worker (FORBIDDEN), and was cut part-way through it.
 */
describe('a worker with another cluster secret joins the cluster through etcd', () => {
  let etcd: EtcdServer;
  let source: string;
  let workers: WorkerProcess[] = [];
  const data = randomBytes(PAGES * MiB);

  before(async () => {
    etcd = await startEtcd();
    source = await mkdtemp(join(tmpdir(), 'fanout-secret-join-'));
    await writeFile(join(source, 'f.bin'), data);
    workers = await startCluster(2, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: '1MiB' });
    const auth = { tokens: [{ token: TEST_ADMIN_TOKEN, role: 'admin' as const }], clusterSecret: 'another-cluster-secret-0123456789' };
    workers.push(await WorkerProcess.start({ id: 'foreign', auth, mounts: { data: source }, pageSize: '1MiB', membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3 } } }));
    await waitFor('every worker to list the three', async () => {
      const views = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/cluster`)).json()) as { members: unknown[] }));
      return views.every((v) => v.members.length === 3);
    });
  });

  after(async () => {
    await Promise.all(workers.map((w) => w.destroy()));
    await etcd?.stop();
    await rm(source, { recursive: true, force: true });
  });

  test('`/v1/data` through every worker gives the file: pages owned across the secret divide are read around the refusal', { timeout: 120_000 }, async () => {
    const owners = new Set(await pageOwners(workers[0]!.url, data.length));
    assert.equal(owners.size, 3, 'every worker, the foreign one included, owns pages of the file');

    for (const worker of workers) {
      const res = await fetch(`${worker.url}/v1/data/data/f.bin`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
      assert.equal(res.status, 200, `through ${worker.id}: ${res.status}`);
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(data), `the file's bytes through ${worker.id}`);
    }
  });
});
