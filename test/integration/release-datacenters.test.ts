import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startCluster, TEST_ADMIN_TOKEN, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { fanout } from '../harness/cli.js';
import { SyncProcess, currentVersion, treeHashes } from '../harness/release.js';

const MiB = 1024 * 1024;
const FIXED_MTIME = 1_700_000_000;

async function put(root: string, rel: string, data: Buffer | string): Promise<void> {
  await mkdir(dirname(join(root, rel)), { recursive: true });
  await writeFile(join(root, rel), data);
}

async function counter(workers: WorkerProcess[], name: string): Promise<number> {
  const values = await Promise.all(workers.map(async (w) => (await w.metrics())[name] ?? 0));
  return values.reduce((a, b) => a + b, 0);
}

interface DatacenterRow {
  datacenter: string;
  following: string | null;
  version: string | null;
  hosts: number;
  switched: number;
  failed: number;
}

/**
 * Two datacenters sharing one release etcd: dc-a's cluster (membership in etcd, workers labelled
 * dc-a) and dc-b's cluster (a static list, labelled dc-b), both over the same source directory
 * (in production dc-b's mount would be fanout:// over dc-a; the release logic does not care).
 * Sync agents of each datacenter read through their own cluster.
 */
describe('releases across datacenters: scoped channels, status per datacenter, staged rollout, load', () => {
  let etcd: EtcdServer;
  let clusterA: WorkerProcess[];
  let clusterB: WorkerProcess[];
  let root: string;
  let source: string;
  const agents: Record<string, SyncProcess> = {};

  const cli = async (args: string[], endpoint = clusterA[0]!.url) => {
    const result = await fanout([...args, '--etcd', etcd.endpoint, '--endpoint', endpoint], { FANOUT_TOKEN: TEST_ADMIN_TOKEN });
    return { ...result, out: result.stdout.toString() };
  };
  const cliJson = async (args: string[], endpoint?: string) => {
    const result = await cli([...args, '--json'], endpoint);
    if (result.code !== 0) throw new Error(`fanout ${args.join(' ')} failed: ${result.out}${result.stderr}`);
    return JSON.parse(result.out);
  };
  /** The error code of a failing --json command (its last stdout line). */
  const errorCode = async (args: string[]) => {
    const result = await cli([...args, '--json']);
    assert.notEqual(result.code, 0, `fanout ${args.join(' ')} should fail`);
    const lines = result.out.trim().split('\n');
    return (JSON.parse(lines[lines.length - 1]!) as { error: { code: string; message: string } }).error;
  };
  const publish = (version: string) => cliJson(['release', 'publish', 'idx', `/data/idx/${version}/`, '--version', version, '--mount', `data=${source}`]);
  const startAgent = (host: string, datacenter: string, cluster: WorkerProcess[]) => {
    agents[host] = SyncProcess.start(
      ['idx', '--channel', 'prod', '--datacenter', datacenter, '--interval', '300ms', '--host', host, '--etcd', etcd.endpoint, '--endpoint', cluster[0]!.url],
      join(root, host),
      join(root, `${host}.log`),
    );
  };
  const versionOf = (host: string) => currentVersion(agents[host]!.dir);
  const allOn = async (hosts: string[], version: string) => (await Promise.all(hosts.map(versionOf))).every((v) => v === version);
  const datacenters = async (): Promise<Record<string, DatacenterRow>> => {
    const status = await cliJson(['release', 'status', 'idx']);
    return Object.fromEntries((status.datacenters as DatacenterRow[]).map((d) => [d.datacenter, d]));
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-dcrel-'));
    source = join(root, 'source');
    for (const v of ['v1', 'v2', 'v3']) {
      await put(source, `idx/${v}/shard-0.bin`, randomBytes(2 * MiB + 17));
      await put(source, `idx/${v}/meta.json`, JSON.stringify({ version: v }));
    }
    etcd = await startEtcd();
    clusterA = await startCluster(2, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: '1MiB', statTtl: '100ms', datacenter: 'dc-a' });
    clusterB = await startCluster(2, { mounts: { data: source }, pageSize: '1MiB', statTtl: '100ms', datacenter: 'dc-b' });
    for (const v of ['v1', 'v2', 'v3']) await publish(v);
  });

  after(async () => {
    await Promise.all(Object.values(agents).map((a) => a.kill()));
    await Promise.all([...(clusterA ?? []), ...(clusterB ?? [])].map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('workers show their datacenter in /v1/status, /v1/cluster and fanout_worker_info', async () => {
    const status = (await (await fetch(`${clusterA[0]!.url}/v1/status`)).json()) as { datacenter?: string };
    assert.equal(status.datacenter, 'dc-a');
    // Through etcd membership (dc-a) and a static list (dc-b: each worker knows only its own label).
    const membersA = ((await (await fetch(`${clusterA[1]!.url}/v1/cluster`)).json()) as { members: { datacenter?: string }[] }).members;
    assert.deepEqual(membersA.map((m) => m.datacenter), ['dc-a', 'dc-a']);
    const metrics = await (await fetch(`${clusterB[0]!.url}/metrics`)).text();
    assert.match(metrics, /^fanout_worker_info\{datacenter="dc-b"\} 1$/m);
  });

  test('a dc-b host follows prod@dc-b once it is promoted, a dc-a host stays on prod; each scope rolls back on its own', async () => {
    await cliJson(['release', 'promote', 'idx', 'v1', '--channel', 'prod']);
    startAgent('a1', 'dc-a', clusterA);
    startAgent('b1', 'dc-b', clusterB);
    await waitFor('both hosts on v1', () => allOn(['a1', 'b1'], 'v1'), 60_000);

    const promoted = await cliJson(['release', 'promote', 'idx', 'v2', '--channel', 'prod', '--datacenter', 'dc-b']);
    assert.equal(promoted.channel, 'prod@dc-b');
    await waitFor('b1 on v2', () => allOn(['b1'], 'v2'), 60_000);
    assert.deepEqual(await treeHashes(join(agents.b1!.dir, 'current')), await treeHashes(join(source, 'idx/v2')));
    await waitFor('status per datacenter', async () => {
      const dcs = await datacenters();
      return dcs['dc-a']?.following === 'prod' && dcs['dc-a'].version === 'v1' && dcs['dc-a'].switched === 1 && dcs['dc-b']?.following === 'prod@dc-b' && dcs['dc-b'].version === 'v2' && dcs['dc-b'].switched === 1;
    });
    assert.equal(await versionOf('a1'), 'v1', 'the dc-a host did not move');

    // The scoped channel was created with prod's history: rolling dc-b back returns it to v1.
    const back = await cliJson(['release', 'rollback', 'idx', '--channel', 'prod@dc-b']);
    assert.deepEqual([back.from, back.to], ['v2', 'v1']);
    await waitFor('b1 back on v1', () => allOn(['b1'], 'v1'), 60_000);

    // prod moved last: every datacenter follows it again.
    await cliJson(['release', 'promote', 'idx', 'v2', '--channel', 'prod']);
    await waitFor('both hosts on v2', () => allOn(['a1', 'b1'], 'v2'), 60_000);
    assert.equal((await datacenters())['dc-b']?.following, 'prod');
  });

  test('rollout promotes the canary datacenter, waits for its hosts to switch, then the rest', async () => {
    startAgent('a2', 'dc-a', clusterA);
    await waitFor('a2 on v2', () => allOn(['a2'], 'v2'), 60_000);
    const result = await cli(['release', 'rollout', 'idx', 'v3', '--canary', 'dc-a', '--rest', '--timeout', '2m', '--json']);
    assert.equal(result.code, 0, result.out + result.stderr);
    const events = result.out.trim().split('\n').map((l) => JSON.parse(l) as { event: string; wave?: string; hosts?: number });
    const order = events.filter((e) => e.event !== 'waiting').map((e) => `${e.event} ${e.wave ?? ''}`.trim());
    assert.deepEqual(order, ['promoted dc-a', 'switched dc-a', 'promoted rest', 'switched rest', 'done']);
    assert.equal(events.find((e) => e.event === 'switched' && e.wave === 'dc-a')?.hosts, 2);
    assert.ok(await allOn(['a1', 'a2', 'b1'], 'v3'));
  });

  test('rollout stops when a canary host fails: ROLLOUT_FAILED, the other datacenters untouched', async () => {
    // v4's page is corrupted in the source after publishing, with its size and mtime kept: the
    // canary hosts fetch it, find the hash wrong, and report HASH_MISMATCH.
    const file = join(source, 'idx/v4/shard-0.bin');
    await put(source, 'idx/v4/shard-0.bin', randomBytes(2 * MiB));
    await utimes(file, FIXED_MTIME, FIXED_MTIME);
    await publish('v4');
    const handle = await open(file, 'r+');
    await handle.write(Buffer.from('CORRUPTED'), 0, 9, MiB + 5);
    await handle.close();
    await utimes(file, FIXED_MTIME, FIXED_MTIME);

    const error = await errorCode(['release', 'rollout', 'idx', 'v4', '--canary', 'dc-a', '--then', 'dc-b', '--timeout', '2m']);
    assert.equal(error.code, 'ROLLOUT_FAILED');
    assert.match(error.message, /HASH_MISMATCH/);
    const channels = (await cliJson(['release', 'status', 'idx'])).channels;
    assert.equal(channels.prod.version, 'v3');
    assert.equal(channels['prod@dc-b'].version, 'v1', 'dc-b was not promoted');
    assert.ok(await allOn(['a1', 'a2', 'b1'], 'v3'), 'every host keeps v3');
    const failed = await datacenters();
    assert.ok((failed['dc-a']?.failed ?? 0) >= 1);

    // Rolled back per scope, the canary follows v3 again (a switch without download).
    await cliJson(['release', 'rollback', 'idx', '--channel', 'prod@dc-a']);
    await waitFor('dc-a hosts idle on v3', async () => {
      const dcs = await datacenters();
      return dcs['dc-a']?.version === 'v3' && dcs['dc-a'].switched === 2;
    }, 60_000);
  });

  test('load --release in dc-b fills dc-b\'s cluster; a dc-b host then syncs without reading the source', async () => {
    await put(source, 'idx/v5/shard-0.bin', randomBytes(3 * MiB + 5));
    await put(source, 'idx/v5/shard-1.bin', randomBytes(MiB));
    await publish('v5');
    const before = await counter(clusterB, 'fanout_source_bytes_total');
    const result = await cli(['load', '--release', 'idx@v5', '--json'], clusterB[0]!.url);
    assert.equal(result.code, 0, result.out + result.stderr);
    const lines = result.out.trim().split('\n').map((l) => JSON.parse(l) as { event: string; pages?: number; bytes?: number; loaded?: number; failed?: unknown[] });
    const done = lines.at(-1)!;
    assert.equal(done.event, 'done');
    assert.ok(lines.some((l) => l.event === 'progress'), 'progress events come before the report');
    assert.equal(done.pages, 4 + 1);
    assert.equal(done.loaded, 5);
    // Each page was read from the source once, by its owner in dc-b (and the manifest once).
    const manifestBytes = (await stat(join(source, '.fanout-releases/idx/v5.json'))).size;
    const read = (await counter(clusterB, 'fanout_source_bytes_total')) - before;
    assert.ok(read >= 4 * MiB + 5 && read <= 4 * MiB + 5 + manifestBytes, `source bytes ${read}`);

    const loaded = await counter(clusterB, 'fanout_source_bytes_total');
    const dir = join(root, 'b-once');
    await cliJson(['release', 'promote', 'idx', 'v5', '--channel', 'prod@dc-b']);
    const once = await cli(['sync', 'idx', '--channel', 'prod', '--datacenter', 'dc-b', '--once', '--dir', dir, '--host', 'b-once', '--json'], clusterB[0]!.url);
    assert.equal(once.code, 0, once.stderr);
    assert.equal(JSON.parse(once.out).following, 'prod@dc-b');
    assert.deepEqual(await treeHashes(join(dir, 'current')), await treeHashes(join(source, 'idx/v5')));
    assert.equal(await counter(clusterB, 'fanout_source_bytes_total'), loaded, 'the sync read every page from the cache');
  });

  test('with the release etcd cut off, promotions and rollouts fail with ETCD_UNAVAILABLE; hosts keep their version and reads work', async () => {
    await waitFor('b1 on v5', () => allOn(['b1'], 'v5'), 60_000);
    const hashes = await treeHashes(join(agents.b1!.dir, 'current'));
    etcd.kill();
    try {
      assert.equal((await errorCode(['release', 'promote', 'idx', 'v3', '--channel', 'prod@dc-b'])).code, 'ETCD_UNAVAILABLE');
      assert.equal((await errorCode(['release', 'rollout', 'idx', 'v3', '--canary', 'dc-b'])).code, 'ETCD_UNAVAILABLE');
      assert.equal(await versionOf('b1'), 'v5');
      assert.deepEqual(await treeHashes(join(agents.b1!.dir, 'current')), hashes);
      // Reads through the cluster do not need the release index.
      const cat = await fanout(['cat', '/data/idx/v5/shard-1.bin', '--endpoint', clusterB[1]!.url]);
      assert.equal(cat.code, 0, cat.stderr);
      assert.deepEqual(cat.stdout, await readFile(join(source, 'idx/v5/shard-1.bin')));
    } finally {
      await etcd.restart();
    }
    // Back: the agents watch again and take up what is promoted now.
    await cliJson(['release', 'promote', 'idx', 'v3', '--channel', 'prod@dc-b']);
    await waitFor('b1 on v3 after the outage', () => allOn(['b1'], 'v3'), 60_000);
    assert.equal(await versionOf('a1'), 'v3');
  });
});
