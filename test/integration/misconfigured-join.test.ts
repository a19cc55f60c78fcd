import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { FanoutClient } from '../../src/client/index.js';
import { fanout } from '../harness/cli.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { MEMBERS_PREFIX, startIdTwin, statusOf } from '../harness/idtwin.js';
import { waitFor } from '../harness/ports.js';
import { startCluster, TEST_ADMIN_TOKEN, WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
// Enough pages that each of three workers surely owns some (with 16, one owned none in ≈ 0.5% of
// the files' versions).
const PAGES = 32;

/** The owner of each page of /data/f.bin (`size` bytes, 1 MiB pages) by the ring a worker at `url` sees. */
async function pageOwners(url: string, size: number): Promise<string[]> {
  const info = (await (await fetch(`${url}/v1/cluster`)).json()) as { members: { id: string; url: string; capacity: number }[] };
  const { version } = (await (await fetch(`${url}/v1/stat/data/f.bin`)).json()) as { version: string };
  const ring = new HashRing(info.members);
  return Array.from({ length: PAGES }, (_, index) => ring.owners(pageKey({ mount: 'data', path: 'f.bin', version, size, index }, MiB), 1)[0]!.id);
}

const PREFIX = MEMBERS_PREFIX;


/** The members a worker's ring holds, as `id=url`. */
async function ringOf(url: string): Promise<string[]> {
  const info = (await (await fetch(`${url}/v1/cluster`)).json()) as { members: { id: string; url: string }[] };
  return info.members.map((m) => `${m.id}=${m.url}`);
}

interface EtcdClusterFixture {
  etcd: EtcdServer;
  source: string;
  /** The bytes of the source's f.bin (PAGES pages of 1 MiB). */
  data: Buffer;
  workers: WorkerProcess[];
}

/** Before the describe's tests: etcd, a source with f.bin, two workers of 1 MiB pages over etcd; all gone after. */
function etcdClusterOfTwo(tag: string): EtcdClusterFixture {
  const fx = { data: randomBytes(PAGES * MiB), workers: [] as WorkerProcess[] } as EtcdClusterFixture;
  before(async () => {
    fx.etcd = await startEtcd();
    fx.source = await mkdtemp(join(tmpdir(), `fanout-${tag}-`));
    await writeFile(join(fx.source, 'f.bin'), fx.data);
    fx.workers.push(...(await startCluster(2, { etcd: fx.etcd.endpoint, mounts: { data: fx.source }, pageSize: '1MiB' })));
  });
  after(async () => {
    await Promise.all(fx.workers.map((w) => w.destroy()));
    await fx.etcd?.stop();
    if (fx.source) await rm(fx.source, { recursive: true, force: true });
  });
  return fx;
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
  const fx = etcdClusterOfTwo('secret-join');

  before(async () => {
    const auth = { tokens: [{ token: TEST_ADMIN_TOKEN, role: 'admin' as const }], clusterSecret: 'another-cluster-secret-0123456789' };
    fx.workers.push(await WorkerProcess.start({ id: 'foreign', auth, mounts: { data: fx.source }, pageSize: '1MiB', membership: { etcd: { endpoints: [fx.etcd.endpoint], leaseTtlSeconds: 3 } } }));
    await waitFor('every worker to list the three', async () => {
      const views = await Promise.all(fx.workers.map(async (w) => (await (await fetch(`${w.url}/v1/cluster`)).json()) as { members: unknown[] }));
      return views.every((v) => v.members.length === 3);
    });
  });

  test('`/v1/data` through every worker gives the file: pages owned across the secret divide are read around the refusal', { timeout: 120_000 }, async () => {
    const owners = new Set(await pageOwners(fx.workers[0]!.url, fx.data.length));
    assert.equal(owners.size, 3, 'every worker, the foreign one included, owns pages of the file');

    for (const worker of fx.workers) {
      const res = await fetch(`${worker.url}/v1/data/data/f.bin`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
      assert.equal(res.status, 200, `through ${worker.id}: ${res.status}`);
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(fx.data), `the file's bytes through ${worker.id}`);
    }
  });
});

/**
 * Two workers run with one id: the first lost its lease (a pause, a partition) and a second one,
 * started with the same id (a replacement, a copied config), registered meanwhile. The first
 * does not overwrite it and stays in no ring. Found by a fault hunt: it went on answering
 * /healthz 200 and nothing (/v1/status, `fanout status`, the metrics) said it was out of the ring.
 */
describe('a worker whose id another running worker took', () => {
  let etcd: EtcdServer;
  let source: string;
  let first: WorkerProcess | undefined;
  let second: WorkerProcess | undefined;
  const file = randomBytes(4096);

  before(async () => {
    etcd = await startEtcd();
    source = await mkdtemp(join(tmpdir(), 'fanout-twin-'));
    await writeFile(join(source, 'f.bin'), file);
  });

  after(async () => {
    first?.resume();
    await Promise.all([first, second].map((w) => w?.destroy()));
    await etcd?.stop();
    await rm(source, { recursive: true, force: true });
  });

  test('says so in /readyz (503), /v1/status, the metrics and `fanout status`, stays live, and takes its id back once the other stops', { timeout: 120_000 }, async () => {
    const config = { id: 'twin', mounts: { data: source }, membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3 } } };
    first = await WorkerProcess.start(config);
    await waitFor('the first to be ready', async () => (await fetch(`${first!.url}/readyz`)).status === 200);
    assert.equal((await statusOf(first.url)).membership?.state, 'registered');

    // The first freezes and its lease goes; the second starts meanwhile and takes the id.
    second = await startIdTwin(first, config, etcd.endpoint);
    const status = await statusOf(first.url);
    assert.equal(status.membership?.heldBy?.url, second.url);
    assert.deepEqual(await ringOf(first.url), [`twin=${second.url}`], 'the first is in no ring, its own included');
    // Live (a restart would not help: started again, it would refuse to start), but not ready.
    assert.equal((await fetch(`${first.url}/healthz`)).status, 200);
    const ready = await fetch(`${first.url}/readyz`);
    assert.equal(ready.status, 503);
    const { error } = (await ready.json()) as { error: { code: string; message: string } };
    assert.equal(error.code, 'WORKER_UNAVAILABLE');
    assert.ok(error.message.includes(`held by another running worker at ${second.url}`), error.message);
    assert.equal((await fetch(`${second.url}/readyz`)).status, 200);
    const metrics = await (await fetch(`${first.url}/metrics`)).text();
    assert.match(metrics, /^fanout_membership_state\{state="id-taken"\} 1$/m);
    assert.match(metrics, /^fanout_membership_state\{state="registered"\} 0$/m);

    // Reads through it (/v1/data, and a page request of a client whose ring predates the take-over):
    // the page of its id is the other worker's, relayed there, not read from the source a second time.
    const read = await fetch(`${first.url}/v1/data/data/f.bin`);
    assert.equal(read.status, 200);
    assert.ok(Buffer.from(await read.arrayBuffer()).equals(file));
    const { version } = (await (await fetch(`${first.url}/v1/stat/data/f.bin`)).json()) as { version: string };
    const page = await fetch(`${first.url}/v1/page/data/f.bin?v=${encodeURIComponent(version)}&size=${file.length}&i=0`);
    assert.equal(page.status, 200);
    assert.ok(Buffer.from(await page.arrayBuffer()).equals(file));
    assert.equal((await first.metrics()).fanout_source_reads_total ?? 0, 0, 'the first read nothing from the source');
    assert.equal((await second.metrics()).fanout_source_reads_total, 1, 'the holder of the id read the page, once');

    const cli = await fanout(['status', '--endpoint', first.url]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.ok(cli.stdout.toString().includes(`worker twin at ${first.url} is in no ring: its id is held by the worker at ${second.url}`), cli.stdout.toString());

    // The second stops (its lease revoked): the first registers by itself, no restart needed.
    await second.stop();
    await waitFor('the first to take its id back', async () => (await fetch(`${first!.url}/readyz`)).status === 200);
    assert.equal((await statusOf(first.url)).membership?.state, 'registered');
    assert.deepEqual(await ringOf(first.url), [`twin=${first.url}`]);
  });
});

/**
 * Member records put by hand without a lease (`etcdctl put PREFIX/w9 '{"id":"w9","url":…}'`).
 * Workers always register under a lease, so no running worker keeps such a record. Found by a
 * fault hunt: every worker took it as a member for good: with w1's URL it doubled w1's share
 * of the ring, with a dead URL it owned pages whose every read failed until relays learnt it
 * was down.
 */
describe('member records without a lease', () => {
  const fx = etcdClusterOfTwo('leaseless');
  const { data } = fx;

  test('are left out of every ring, listed with the command that removes them, and logged once', { timeout: 120_000 }, async () => {
    const { workers } = fx;
    const [w1, w2] = workers as [WorkerProcess, WorkerProcess];
    const ring = await ringOf(w1.url);
    const owners = await pageOwners(w1.url, data.length);
    const client = new Etcd3({ hosts: fx.etcd.endpoint });
    try {
      await client.put(PREFIX + 'w9').value(JSON.stringify({ id: 'w9', url: w1.url, capacity: 0 }));
      await client.put(PREFIX + 'ghost').value(JSON.stringify({ id: 'ghost', url: 'http://127.0.0.1:9', capacity: 0 }));
      const ignoredKeys = async (w: WorkerProcess) => ((await statusOf(w.url)).membership?.ignored ?? []).map((r) => r.key).join();
      for (const w of workers) await waitFor(`${w.id} to list the records it leaves out`, async () => (await ignoredKeys(w)) === `${PREFIX}ghost,${PREFIX}w9`);
      for (const w of workers) {
        assert.deepEqual(await ringOf(w.url), ring, `${w.id}'s ring is what it was`);
        assert.deepEqual(await pageOwners(w.url, data.length), owners, `${w.id} places the pages where it did`);
        assert.match(await (await fetch(`${w.url}/metrics`)).text(), /^fanout_membership_ignored_records 2$/m);
      }
      const cli = await fanout(['status', '--endpoint', w2.url]);
      assert.equal(cli.code, 0, cli.stderr);
      assert.ok(cli.stdout.toString().includes(`etcdctl del ${PREFIX}w9`), cli.stdout.toString());
      // Re-put as it was: no second warning.
      await client.put(PREFIX + 'w9').value(JSON.stringify({ id: 'w9', url: w1.url, capacity: 0 }));
      await client.delete().key(PREFIX + 'ghost');
      await waitFor('w1 to forget the deleted record', async () => (await ignoredKeys(w1)) === `${PREFIX}w9`);
      const log = await readFile(join(w1.dir, 'worker.log'), 'utf8');
      assert.equal(log.split('\n').filter((line) => line.includes(`"remove":"etcdctl del ${PREFIX}w9"`)).length, 1, log);
    } finally {
      client.close();
    }
  });
});
