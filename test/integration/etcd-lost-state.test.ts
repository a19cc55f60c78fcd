import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import type { Member } from '../../src/core/types.js';
import { EtcdMembership, type EtcdMembershipOptions } from '../../src/lib/membership/index.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { ReleaseRegistry, type VersionRecord } from '../../src/release/registry.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { freePort, waitFor, untilEvent } from '../harness/ports.js';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanout, fanoutJson, sha256 } from '../harness/cli.js';
import { SyncProcess, currentVersion } from '../harness/release.js';

const PREFIX = '/fanout/lost/members/';
const TTL = 2;

function member(id: string): Member {
  return { id, url: `http://${id}.test:7450`, capacity: 1024 ** 3 };
}

function ids(m: EtcdMembership): string {
  return m.members().map((x) => x.id).join();
}

/** What etcd holds under the prefix, and each record's lease, read with a client of its own. */
async function recordsInEtcd(endpoint: string): Promise<Record<string, string>> {
  const client = new Etcd3({ hosts: endpoint });
  try {
    const res = await client.kv.range({ key: Buffer.from(PREFIX), range_end: Buffer.from(PREFIX.slice(0, -1) + '0') });
    return Object.fromEntries(res.kvs.map((kv) => [kv.key.toString().slice(PREFIX.length), String(kv.lease)]));
  } finally {
    client.close();
  }
}

/** Puts 60 KB values under a junk prefix until etcd refuses with its NOSPACE alarm; returns the error. */
async function fillEtcd(endpoint: string): Promise<string> {
  const client = new Etcd3({ hosts: endpoint });
  try {
    const value = Buffer.alloc(60_000, 'x');
    for (let i = 0; i < 1000; i++) {
      try {
        await client.put(`/junk/${i}`).value(value);
      } catch (err) {
        return (err as Error).message;
      }
    }
    throw new Error('etcd took 60 MB without its space alarm');
  } finally {
    client.close();
  }
}

describe('etcd that lost its state or its space', { timeout: 90_000 }, () => {
  const servers: EtcdServer[] = [];
  let started: EtcdMembership[] = [];

  const open = async (etcd: EtcdServer, opts: Partial<EtcdMembershipOptions>): Promise<EtcdMembership> => {
    const m = new EtcdMembership({ endpoints: [etcd.endpoint], prefix: PREFIX, leaseTtlSeconds: TTL, requestTimeoutMs: 1000, ...opts });
    started.push(m);
    await m.start();
    return m;
  };

  /** Members a and b and a watcher of them, once all three list both. */
  const twoMembersAndAWatcher = async (etcd: EtcdServer) => {
    const a = await open(etcd, { self: member('a') });
    const b = await open(etcd, { self: member('b') });
    const observer = await open(etcd, {});
    for (const m of [a, b, observer]) await untilEvent(m, 'change', () => ids(m) === 'a,b', 'both listed');
    return { a, b, observer };
  };

  afterEach(async () => {
    for (const m of started) await m.stop().catch(() => undefined);
    started = [];
  });
  after(async () => {
    for (const s of servers) await s.stop();
  });

  test('etcd restored from nothing (a new empty cluster at the same endpoint): running members register again under new leases, and every watcher lists them', async () => {
    const etcd = await startEtcd();
    servers.push(etcd);
    const { a, b, observer } = await twoMembersAndAWatcher(etcd);
    const oldLeases = await recordsInEtcd(etcd.endpoint);

    await etcd.wipe();
    // Within a TTL or two, without a restart: both records are back, under leases of the new cluster.
    const back = async () => Object.keys(await recordsInEtcd(etcd.endpoint)).sort().join() === 'a,b';
    for (let i = 0; !(await back()); i++) {
      assert.ok(i < 200, 'a and b never registered again in the new cluster');
      await new Promise((r) => setTimeout(r, 100));
    }
    const newLeases = await recordsInEtcd(etcd.endpoint);
    assert.notEqual(newLeases.a, oldLeases.a);
    for (const m of [a, b, observer]) await untilEvent(m, 'stale', () => !m.stale && ids(m) === 'a,b', 'fresh and both listed');
    // The watches follow the new cluster: a member joining it is seen by all.
    const c = await open(etcd, { self: member('c') });
    for (const m of [a, b, observer, c]) await untilEvent(m, 'change', () => ids(m) === 'a,b,c', 'c listed');
  });

  test('etcd restored from nothing under 3 worker processes: each registers again in the new cluster without a restart, and their rings follow it (a worker killed afterwards leaves every ring)', async () => {
    const etcd = await startEtcd();
    servers.push(etcd);
    let workers: WorkerProcess[] = [];
    try {
      workers = await startCluster(3, { etcd: etcd.endpoint, mounts: { data: '/nonexistent-source' } });
      await etcd.wipe();
      const observer = await open(etcd, { prefix: '/fanout/default/members/' });
      await untilEvent(observer, 'change', () => ids(observer) === 'w1,w2,w3', 'the three workers registered in the new cluster');
      const ring = async (w: WorkerProcess) => ((await (await fetch(`${w.url}/v1/cluster`)).json()) as { members: { id: string }[] }).members.map((m) => m.id).sort().join();
      await workers[2]!.kill(); // its lease in the new cluster runs out: only a live watch on it tells the others
      await untilEvent(observer, 'change', () => ids(observer) === 'w1,w2', 'w3 expired');
      await waitFor('w1 and w2 rings without w3', async () => (await ring(workers[0]!)) === 'w1,w2' && (await ring(workers[1]!)) === 'w1,w2', 30_000);
    } finally {
      await Promise.all(workers.map((w) => w.destroy().catch(() => undefined)));
    }
  });

  test('every key deleted by hand (etcdctl del --prefix ""), leases left: members write their records again and watchers list them', async () => {
    const etcd = await startEtcd();
    servers.push(etcd);
    const { a, b, observer } = await twoMembersAndAWatcher(etcd);
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      await client.delete().all();
    } finally {
      client.close();
    }
    for (const m of [a, b, observer]) await untilEvent(m, 'change', () => ids(m) === 'a,b', 'both listed again');
    const back = async () => Object.keys(await recordsInEtcd(etcd.endpoint)).sort().join() === 'a,b';
    for (let i = 0; !(await back()); i++) {
      assert.ok(i < 200, 'a and b never wrote their records again');
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  test('a member cut off from etcd while members come and go, a burst of puts and a compaction past its last revision: once back, it lists exactly the members there are', async () => {
    const etcd = await startEtcd();
    servers.push(etcd);
    const proxy = await cuttableProxy(etcd.endpoint);
    try {
      const b = await open(etcd, { self: member('b') });
      const a = await open(etcd, { self: member('a'), endpoints: [proxy.endpoint], leaseTtlSeconds: 30 });
      await untilEvent(a, 'change', () => ids(a) === 'a,b', 'a lists a and b');
      proxy.cut();
      await untilEvent(a, 'stale', () => a.stale, 'a sees its watch break');
      // While a sees nothing: b leaves, c joins, 50 puts to c's record, then etcd compacts them away.
      await b.stop();
      const c = await open(etcd, { self: member('c') });
      const client = new Etcd3({ hosts: etcd.endpoint });
      try {
        for (let i = 0; i < 50; i++) await client.put(`${PREFIX}x`).value(JSON.stringify({ id: 'x', url: `http://x${i}.test:7450` }));
        await client.delete().key(`${PREFIX}x`);
        const revision = (await client.kv.range({ key: Buffer.from('/'), count_only: true })).header.revision;
        await client.kv.compact({ revision, physical: true });
      } finally {
        client.close();
      }
      assert.equal(ids(a), 'a,b', 'a still has its last list');
      proxy.restore();
      await untilEvent(a, 'stale', () => !a.stale && ids(a) === 'a,c', 'a back, listing a and c');
      await untilEvent(c, 'change', () => ids(c) === 'a,c', 'c lists a and c');
    } finally {
      proxy.close();
    }
  });

  test('etcd out of space (NOSPACE alarm): running members keep their leases and records past several TTLs; a new member fails to start with ETCD_FULL saying what to do, and starts once space is freed', async () => {
    const etcd = await startEtcd({ quotaBackendBytes: 1024 * 1024 });
    servers.push(etcd);
    const a = await open(etcd, { self: member('a') });
    const b = await open(etcd, { self: member('b') });
    for (const m of [a, b]) await untilEvent(m, 'change', () => ids(m) === 'a,b', 'both listed');
    const leases = await recordsInEtcd(etcd.endpoint);
    assert.match(await fillEtcd(etcd.endpoint), /database space exceeded/);

    await new Promise((r) => setTimeout(r, 3 * TTL * 1000)); // several lease periods, renewals refused or not
    assert.deepEqual(await recordsInEtcd(etcd.endpoint), leases, 'the same records under the same leases');
    for (const m of [a, b]) assert.equal(ids(m), 'a,b');

    const warnings: string[] = [];
    const logger = { debug: () => undefined, info: () => undefined, warn: (_: object, msg?: string) => void warnings.push(msg ?? '') };
    const c = new EtcdMembership({ endpoints: [etcd.endpoint], prefix: PREFIX, self: member('c'), leaseTtlSeconds: TTL, requestTimeoutMs: 1000, startTimeoutMs: 1500, logger });
    await assert.rejects(c.start(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ETCD_FULL', err.message);
      assert.match(err.message, /out of space.*register worker c.*etcdctl alarm disarm/s);
      return true;
    });
    // Said as what it is, once: etcd answered, so not "unreachable".
    assert.deepEqual(warnings, ['etcd is out of space: this worker is not registered until it takes writes again', 'etcd refuses writes (out of space); keeping the last known members, reads go on']);

    await freeEtcd(etcd.endpoint);
    const c2 = await open(etcd, { self: member('c') });
    for (const m of [a, b, c2]) await untilEvent(m, 'change', () => ids(m) === 'a,b,c', 'c listed');
  });

  test('etcd out of space: release writes fail with ETCD_FULL naming the cause and the remedy; a sync agent\'s host record stays listed while it reports', async () => {
    const etcd = await startEtcd({ quotaBackendBytes: 1024 * 1024 });
    servers.push(etcd);
    const registry = new ReleaseRegistry({ endpoints: [etcd.endpoint] }, 2000);
    try {
      await registry.createVersion(version('v1'));
      await registry.createVersion(version('v2'));
      await registry.promote('app', 'prod', 'v1');
      const state = { host: 'h1', channel: 'prod', dir: '/srv/app', current: 'v1', target: 'v1', phase: 'idle' as const, bytesDone: 0, bytesTotal: 0, bytesLocal: 0, bytesFetched: 0, error: null, updatedAt: new Date().toISOString() };
      await registry.reportAgent('app', state, TTL);
      assert.match(await fillEtcd(etcd.endpoint), /database space exceeded/);

      const full = (what: RegExp) => (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ETCD_FULL', err.message);
        assert.match(err.message, what);
        assert.match(err.message, /out of space.*etcdctl compact.*etcdctl defrag.*etcdctl alarm disarm/s);
        return true;
      };
      await assert.rejects(registry.promote('app', 'prod', 'v2'), full(/cannot move channel prod/));
      await assert.rejects(registry.createVersion(version('v3')), full(/cannot publish app@v3/));
      // The agent reports every second (its heartbeat) for several of its lease's TTLs: refused each time.
      for (let i = 0; i < 3 * TTL; i++) {
        await assert.rejects(registry.reportAgent('app', { ...state, updatedAt: new Date().toISOString() }, TTL), full(/cannot report agent state/));
        await new Promise((r) => setTimeout(r, 1000));
      }
      assert.deepEqual((await registry.listAgents('app')).map((x) => [x.host, x.current]), [['h1', 'v1']], 'the host is still listed, on v1');
      assert.equal((await registry.getChannel('app', 'prod'))?.record.version, 'v1');

      await freeEtcd(etcd.endpoint);
      await registry.reportAgent('app', { ...state, phase: 'staging', updatedAt: new Date().toISOString() }, TTL);
      await registry.promote('app', 'prod', 'v2');
      assert.deepEqual((await registry.listAgents('app')).map((x) => x.phase), ['staging']);
    } finally {
      await registry.close();
    }
  });
});

describe('a sync agent after etcd lost its state or its space (real etcd, worker and CLI)', { timeout: 120_000 }, () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-lost-sync-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('etcd restored from nothing, v1 published again from another tree: a host on v1 does not switch or delete, fails with RELEASE_EXISTS naming both digests, and shows so in release status; v2 then syncs', async () => {
    const etcd = await startEtcd();
    let workers: WorkerProcess[] = [];
    try {
      const data = join(root, 'data');
      const other = join(root, 'other');
      for (const [src, tree, body] of [[data, 'v1', 'old\n'], [data, 'v1b', 'new\n'], [other, 'v1', 'new\n']] as const) {
        await mkdir(join(src, 'app', tree), { recursive: true });
        await writeFile(join(src, 'app', tree, 'a.txt'), body);
      }
      workers = await startCluster(1, { etcd: etcd.endpoint, mounts: { data, other } });
      const common = ['--etcd', etcd.endpoint, '--endpoint', workers[0]!.url];
      const dir = join(root, 'host');
      const sync = (...more: string[]) => fanout(['sync', 'app', '--channel', 'prod', '--once', '--dir', dir, '--host', 'h1', ...more, ...common]);
      await fanoutJson(['release', 'publish', 'app', '/data/app/v1/', '--version', 'v1', '--mount', `data=${data}`, ...common]);
      await fanoutJson(['release', 'promote', 'app', 'v1', '--channel', 'prod', ...common]);
      assert.equal((await sync()).code, 0);
      assert.equal(await readFile(join(dir, 'current/a.txt'), 'utf8'), 'old\n');
      const installedDigest = sha256(await readFile(join(dir, '.manifests/v1.json')));

      await etcd.wipe();
      // Publish itself: the same mount keeps v1's manifest, so another tree there is refused...
      const again = await fanout(['release', 'publish', 'app', '/data/app/v1b/', '--version', 'v1', '--mount', `data=${data}`, '--json', ...common]);
      assert.equal((JSON.parse(again.stdout.toString()) as { error: { code: string } }).error.code, 'RELEASE_EXISTS');
      // ...but from another mount etcd, which lost v1, takes it.
      const republished = await fanoutJson<{ manifestSha256: string }>(['release', 'publish', 'app', '/other/app/v1/', '--version', 'v1', '--mount', `other=${other}`, ...common]);
      await fanoutJson(['release', 'promote', 'app', 'v1', '--channel', 'prod', ...common]);
      assert.notEqual(republished.manifestSha256, installedDigest);

      const refused = await sync('--json');
      assert.notEqual(refused.code, 0, 'before: exit 0, "in sync" on the old tree');
      const error = (JSON.parse(refused.stdout.toString()) as { error: { code: string; message: string } }).error;
      assert.equal(error.code, 'RELEASE_EXISTS');
      assert.ok(error.message.includes(republished.manifestSha256) && error.message.includes(installedDigest) && /new version name/.test(error.message), error.message);
      assert.equal(await currentVersion(dir), 'v1');
      assert.equal(await readFile(join(dir, 'current/a.txt'), 'utf8'), 'old\n', 'nothing switched or deleted');
      const status = await fanoutJson<{ agents: { host: string; phase: string; error: string | null }[] }>(['release', 'status', 'app', ...common]);
      const h1 = status.agents.find((a) => a.host === 'h1');
      assert.equal(h1?.phase, 'error');
      assert.match(h1?.error ?? '', /^RELEASE_EXISTS: /);
      // Its `current` is the channel's version name, but not its tree: every summary counts it in
      // error, none as on the channel's version (the dashboard's counted it there: "1 host: 1 on
      // their channel's version, 1 error").
      const text = (await fanout(['release', 'status', 'app', ...common])).stdout.toString();
      assert.match(text, /^1 host, 0 on their channel's version, 1 not$/m, text);
      const view = (await (await fetch(`${workers[0]!.url}/v1/releases`)).json()) as { releases: { name: string; hosts: { total: number; onChannelVersion: number; errorCount: number } }[] };
      const hosts = view.releases.find((r) => r.name === 'app')?.hosts;
      assert.deepEqual(hosts && [hosts.total, hosts.onChannelVersion, hosts.errorCount], [1, 0, 1], JSON.stringify(hosts));

      await fanoutJson(['release', 'publish', 'app', '/other/app/v1/', '--version', 'v2', '--mount', `other=${other}`, ...common]);
      await fanoutJson(['release', 'promote', 'app', 'v2', '--channel', 'prod', ...common]);
      assert.equal((await sync()).code, 0);
      assert.equal(await readFile(join(dir, 'current/a.txt'), 'utf8'), 'new\n');
    } finally {
      await Promise.all(workers.map((w) => w.destroy().catch(() => undefined)));
      await etcd.stop();
    }
  });

  test('etcd out of space under an idle sync agent: ETCD_FULL is logged once however many rounds fail, and its end once', async () => {
    const etcd = await startEtcd({ quotaBackendBytes: 1024 * 1024 });
    let workers: WorkerProcess[] = [];
    let agent: SyncProcess | undefined;
    try {
      const data = join(root, 'full-data');
      await mkdir(join(data, 'app/v1'), { recursive: true });
      await writeFile(join(data, 'app/v1/a.txt'), 'v1\n');
      workers = await startCluster(1, { etcd: etcd.endpoint, mounts: { data } });
      const common = ['--etcd', etcd.endpoint, '--endpoint', workers[0]!.url];
      await fanoutJson(['release', 'publish', 'app', '/data/app/v1/', '--version', 'v1', '--mount', `data=${data}`, ...common]);
      await fanoutJson(['release', 'promote', 'app', 'v1', '--channel', 'prod', ...common]);
      const dir = join(root, 'full-host');
      const log = join(root, 'full-agent.log');
      const port = await freePort();
      agent = SyncProcess.start(['app', '--channel', 'prod', '--interval', '200ms', '--host', 'h1', '--metrics', `127.0.0.1:${port}`, ...common], dir, log);
      const failedRounds = async () => {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        return Number(/^fanout_sync_failed_rounds_total\{[^}]*\} (\d+)$/m.exec(text)?.[1] ?? 0);
      };
      await waitFor('the agent on v1', async () => (await currentVersion(dir)) === 'v1', 30_000);
      assert.match(await fillEtcd(etcd.endpoint), /database space exceeded/);
      await waitFor('6 rounds refused by etcd', async () => (await failedRounds()) >= 6, 60_000);
      const fullLines = async () => (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes('ETCD_FULL'));
      assert.equal((await fullLines()).length, 1, `before: one line per round:\n${(await fullLines()).join('\n')}`);
      await freeEtcd(etcd.endpoint);
      await waitFor('the end of the outage logged', async () => (await readFile(log, 'utf8')).includes('etcd takes writes again'), 30_000);
      assert.equal((await fullLines()).length, 1);
    } finally {
      await agent?.kill();
      await Promise.all(workers.map((w) => w.destroy().catch(() => undefined)));
      await etcd.stop();
    }
  });
});

function version(v: string): VersionRecord {
  return { name: 'app', version: v, mount: 'm', prefix: 'p/', manifest: `p/.fanout/${v}.json`, manifestSha256: '0'.repeat(64), pageSize: 1 << 20, files: 1, bytes: 1, pages: 1, uniquePages: 1, createdAt: new Date().toISOString() };
}

/** What an operator does (etcd's documented recovery): delete the filler, compact to the current revision, defragment, disarm. */
async function freeEtcd(endpoint: string): Promise<void> {
  const etcdctl = (...args: string[]) => promisify(execFile)('etcdctl', [`--endpoints=${endpoint}`, ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
  await etcdctl('del', '--prefix', '/junk/');
  const status = JSON.parse((await etcdctl('endpoint', 'status', '-w', 'json')).stdout) as { Status: { header: { revision: number } } }[];
  await etcdctl('compact', String(status[0]!.Status.header.revision));
  await etcdctl('defrag');
  await etcdctl('alarm', 'disarm');
}

/** A TCP proxy to etcd whose connections can be cut (and new ones refused) and restored. */
async function cuttableProxy(endpoint: string): Promise<{ endpoint: string; cut(): void; restore(): void; close(): void }> {
  const target = new URL(endpoint);
  const sockets = new Set<Socket>();
  let open = true;
  const server = createServer((client) => {
    if (!open) return void client.destroy();
    const upstream = connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cutAll = () => {
    for (const s of sockets) s.destroy();
  };
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut: () => ((open = false), cutAll()),
    restore: () => void (open = true),
    close: () => (cutAll(), server.close()),
  };
}
