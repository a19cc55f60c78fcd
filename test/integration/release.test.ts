import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, open, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { fanoutBin, startCluster, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { executableEnv, fanout } from '../harness/cli.js';
import { SyncProcess, currentVersion, treeHashes } from '../harness/release.js';

const MiB = 1024 * 1024;

async function sourceBytes(workers: WorkerProcess[]): Promise<number> {
  const values = await Promise.all(workers.map(async (w) => (await w.metrics()).fanout_source_bytes_total ?? 0));
  return values.reduce((a, b) => a + b, 0);
}

async function put(root: string, rel: string, data: Buffer | string): Promise<void> {
  await mkdir(dirname(join(root, rel)), { recursive: true });
  await writeFile(join(root, rel), data);
}

/**
 * Overwrites bytes in place and puts the mtime back: the source "version" (size-mtime) does not
 * change, so only the content hash can tell. The mtime is a whole second, set before publishing,
 * so restoring it is exact.
 */
const FIXED_MTIME = 1_700_000_000;
async function corruptInPlace(file: string, offset: number): Promise<void> {
  const handle = await open(file, 'r+');
  await handle.write(Buffer.from('CORRUPTED'), 0, 9, offset);
  await handle.close();
  await utimes(file, FIXED_MTIME, FIXED_MTIME);
}

describe('releases: publish, promote, sync agents, dedup, rollback, bad input', () => {
  let etcd: EtcdServer;
  let workers: WorkerProcess[];
  let root: string;
  let source: string;
  let agents: SyncProcess[] = [];
  let watcher: SyncProcess | undefined;
  let common: string[];

  const cli = async (args: string[]) => {
    const result = await fanout([...args, ...common]);
    return { ...result, out: result.stdout.toString() };
  };
  const cliJson = async (args: string[]) => {
    const result = await cli([...args, '--json']);
    if (result.code !== 0) throw new Error(`fanout ${args.join(' ')} failed: ${result.out}${result.stderr}`);
    return JSON.parse(result.out);
  };
  const errorCode = async (args: string[]) => {
    const result = await cli([...args, '--json']);
    assert.notEqual(result.code, 0, `fanout ${args.join(' ')} should fail`);
    return (JSON.parse(result.out) as { error: { code: string } }).error.code;
  };
  const publish = (version: string, dir: string) =>
    cliJson(['release', 'publish', 'llm', `/data/${dir}/`, '--version', version, '--mount', `data=${source}`]);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-release-'));
    source = join(root, 'source');
    // v1: pages of 1 MiB; a.bin spans 6 pages, c.bin 3, and two tiny files.
    await put(source, 'llm/v1/a.bin', randomBytes(5 * MiB + 123));
    await put(source, 'llm/v1/b/c.bin', randomBytes(3 * MiB));
    await put(source, 'llm/v1/small.txt', 'hello release\n');
    await put(source, 'llm/v1/empty.txt', '');
    etcd = await startEtcd();
    workers = await startCluster(3, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: '1MiB', statTtl: '100ms' });
    common = ['--etcd', etcd.endpoint, '--endpoint', workers[0]!.url];
  });

  after(async () => {
    await Promise.all([...agents, ...(watcher ? [watcher] : [])].map((a) => a.kill()));
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('publish builds a manifest; publishing the same version again fails with RELEASE_EXISTS', async () => {
    const record = await publish('v1', 'llm/v1');
    assert.equal(record.files, 4);
    assert.equal(record.bytes, 8 * MiB + 123 + 14);
    assert.equal(record.pages, 6 + 3 + 1);
    assert.match(record.manifestSha256, /^[0-9a-f]{64}$/);
    const manifest = JSON.parse(await readFile(join(source, '.fanout-releases/llm/v1.json'), 'utf8'));
    assert.equal(manifest.files.length, 4);
    assert.equal(await errorCode(['release', 'publish', 'llm', '/data/llm/v1/', '--version', 'v1', '--mount', `data=${source}`]), 'RELEASE_EXISTS');
    assert.equal(await errorCode(['release', 'promote', 'llm', 'nope', '--channel', 'prod']), 'RELEASE_NOT_FOUND');
  });

  test('promote → three sync agents switch, trees equal the source, the hook runs, status shows them', async () => {
    await cliJson(['release', 'promote', 'llm', 'v1', '--channel', 'prod']);
    for (let i = 1; i <= 3; i++) {
      const dir = join(root, `host${i}`);
      const hook = `echo "$FANOUT_VERSION" >> ${join(root, `hook${i}.log`)}`;
      agents.push(SyncProcess.start(['llm', '--channel', 'prod', '--interval', '200ms', '--host', `host${i}`, '--on-switch', hook, ...common], dir, join(root, `agent${i}.log`)));
    }
    await waitFor('agents on v1', async () => (await Promise.all(agents.map((a) => currentVersion(a.dir)))).every((v) => v === 'v1'), 60_000);
    const expected = await treeHashes(join(source, 'llm/v1'));
    for (const agent of agents) assert.deepEqual(await treeHashes(join(agent.dir, 'current')), expected);
    assert.equal((await readFile(join(root, 'hook1.log'), 'utf8')).trim(), 'v1');
    await waitFor('status to list three idle hosts', async () => {
      const status = await cliJson(['release', 'status', 'llm']);
      return status.agents.length === 3 && status.agents.every((a: { current: string; phase: string }) => a.current === 'v1' && a.phase === 'idle');
    });
  });

  test('v2 with two changed pages: agents copy the rest locally; the source is read for the changed pages only', async () => {
    await cp(join(source, 'llm/v1'), join(source, 'llm/v2'), { recursive: true });
    const a = await open(join(source, 'llm/v2/a.bin'), 'r+');
    await a.write(randomBytes(100), 0, 100, 2 * MiB + 10); // page 2 of a.bin
    await a.close();
    const c = await open(join(source, 'llm/v2/b/c.bin'), 'r+');
    await c.write(randomBytes(100), 0, 100, 0); // page 0 of c.bin
    await c.close();
    await publish('v2', 'llm/v2');
    const before = await sourceBytes(workers);
    await cliJson(['release', 'promote', 'llm', 'v2', '--channel', 'prod', '--expect', 'v1']);
    await waitFor('agents on v2', async () => (await Promise.all(agents.map((x) => currentVersion(x.dir)))).every((v) => v === 'v2'), 60_000);
    const expected = await treeHashes(join(source, 'llm/v2'));
    for (const agent of agents) assert.deepEqual(await treeHashes(join(agent.dir, 'current')), expected);
    const v2Bytes = (await sourceBytes(workers)) - before;
    // Two changed pages (2 MiB) plus the manifest (a few KiB); v2 is 8 MiB.
    assert.ok(v2Bytes >= 2 * MiB && v2Bytes <= 2 * MiB + 64 * 1024, `source bytes for v2: ${v2Bytes}`);

    // A new host has no v1 on disk: unchanged pages come from the cluster, cached by content hash.
    const fresh = join(root, 'fresh');
    const before2 = await sourceBytes(workers);
    const once = await cli(['sync', 'llm', '--channel', 'prod', '--once', '--dir', fresh, '--host', 'fresh']);
    assert.equal(once.code, 0, once.stderr);
    assert.deepEqual(await treeHashes(join(fresh, 'current')), expected);
    assert.equal((await sourceBytes(workers)) - before2, 0);
  });

  test('sync run as the executable keeps NODE_EXTRA_CA_CERTS from Node, and its on-switch hook gets the variable as given', async () => {
    const dir = join(root, 'hooked');
    const seen = join(root, 'hook-env');
    const extraCa = join(root, 'extra ca.pem');
    const hook = `printf '%s|%s' "$NODE_EXTRA_CA_CERTS" "\${FANOUT_NODE_EXTRA_CA_CERTS-unset}" > '${seen}'`;
    const env = executableEnv({ NODE_OPTIONS: '', NODE_EXTRA_CA_CERTS: extraCa });
    const code = await new Promise<number>((resolve) =>
      execFile(fanoutBin, ['sync', 'llm', '--channel', 'prod', '--once', '--dir', dir, '--host', 'hooked', '--on-switch', hook, ...common], { env }, (err) => resolve(err ? 1 : 0)),
    );
    assert.equal(code, 0);
    assert.equal(await currentVersion(dir), 'v2');
    assert.equal(await readFile(seen, 'utf8'), `${extraCa}|unset`);
  });

  test('the agents keep one old version and roll back to it', async () => {
    const installed = await import('node:fs/promises').then((fs) => fs.readdir(join(agents[0]!.dir, 'versions')));
    assert.deepEqual(installed.sort(), ['v1', 'v2']);
    const result = await cliJson(['release', 'rollback', 'llm', '--channel', 'prod']);
    assert.deepEqual({ from: result.from, to: result.to }, { from: 'v2', to: 'v1' });
    await waitFor('agents back on v1', async () => (await Promise.all(agents.map((x) => currentVersion(x.dir)))).every((v) => v === 'v1'), 60_000);
    const expected = await treeHashes(join(source, 'llm/v1'));
    for (const agent of agents) assert.deepEqual(await treeHashes(join(agent.dir, 'current')), expected);
    assert.equal((await readFile(join(root, 'hook2.log'), 'utf8')).trim().split('\n').join(','), 'v1,v2,v1');
  });

  // The agent re-reads the channel only every hour: a promotion seen within the wait below came
  // through the etcd watch (opened before its first read, so live once it is on v1).
  test('an agent with an hour-long --interval picks up a promotion through its watch', async () => {
    await cliJson(['release', 'promote', 'llm', 'v1', '--channel', 'watch']);
    watcher = SyncProcess.start(['llm', '--channel', 'watch', '--interval', '1h', '--host', 'watcher', ...common], join(root, 'watcher'), join(root, 'watcher.log'));
    await waitFor('watcher on v1', async () => (await currentVersion(watcher!.dir)) === 'v1', 60_000);
    await cliJson(['release', 'promote', 'llm', 'v2', '--channel', 'watch', '--expect', 'v1']);
    await waitFor('watcher on v2', async () => (await currentVersion(watcher!.dir)) === 'v2', 60_000);
    assert.deepEqual(await treeHashes(join(watcher.dir, 'current')), await treeHashes(join(source, 'llm/v2')));
  });

  test('concurrent promotions from the same state: exactly one wins', async () => {
    await cliJson(['release', 'promote', 'llm', 'v1', '--channel', 'race']);
    const results = await Promise.all(['v2', 'v2', 'v2', 'v2'].map((v) => cli(['release', 'promote', 'llm', v, '--channel', 'race', '--expect', 'v1', '--json'])));
    const winners = results.filter((r) => r.code === 0);
    assert.equal(winners.length, 1, results.map((r) => r.out).join('\n'));
    for (const loser of results.filter((r) => r.code !== 0)) assert.equal(JSON.parse(loser.out).error.code, 'PROMOTION_CONFLICT');
  });

  test('a tampered manifest or a corrupted page never gets switched to', async () => {
    const dir = join(root, 'careful');
    await cliJson(['release', 'promote', 'llm', 'v1', '--channel', 'staging']);
    const sync = () => cli(['sync', 'llm', '--channel', 'staging', '--once', '--dir', dir, '--host', 'careful', '--json']);
    assert.equal((await sync()).code, 0);
    assert.equal(await currentVersion(dir), 'v1');

    await put(source, 'llm/v3/model.bin', randomBytes(2 * MiB));
    await publish('v3', 'llm/v3');
    const manifestFile = join(source, '.fanout-releases/llm/v3.json');
    const text = await readFile(manifestFile, 'utf8');
    await writeFile(manifestFile, text.replace(/"createdAt":"[^"]*"/, '"createdAt":"2000-01-01T00:00:00.000Z"'));
    await cliJson(['release', 'promote', 'llm', 'v3', '--channel', 'staging']);
    const tampered = await sync();
    assert.equal(JSON.parse(tampered.out).error.code, 'MANIFEST_INVALID');
    assert.equal(await currentVersion(dir), 'v1');

    await put(source, 'llm/v4/model.bin', randomBytes(3 * MiB));
    await utimes(join(source, 'llm/v4/model.bin'), FIXED_MTIME, FIXED_MTIME);
    await publish('v4', 'llm/v4');
    await corruptInPlace(join(source, 'llm/v4/model.bin'), MiB + 5);
    await cliJson(['release', 'promote', 'llm', 'v4', '--channel', 'staging']);
    const corrupt = await sync();
    assert.equal(JSON.parse(corrupt.out).error.code, 'HASH_MISMATCH');
    assert.equal(await currentVersion(dir), 'v1');
    assert.deepEqual(await treeHashes(join(dir, 'current')), await treeHashes(join(source, 'llm/v1')));
    const status = await cliJson(['release', 'status', 'llm']);
    const careful = status.agents.find((a: { host: string }) => a.host === 'careful');
    assert.equal(careful.phase, 'error');
    assert.match(careful.error, /HASH_MISMATCH/);
  });

  test('an agent killed while staging converges when restarted', async () => {
    for (let i = 0; i < 12; i++) await put(source, `llm/v5/part-${String(i).padStart(2, '0')}.bin`, randomBytes(2 * MiB));
    await publish('v5', 'llm/v5');
    await cliJson(['release', 'promote', 'llm', 'v5', '--channel', 'big']);
    const dir = join(root, 'killed');
    // Paced at 4 MB/s, the 24 MiB take ~6 s: the agent is killed once the first files are staged.
    const agent = SyncProcess.start(['llm', '--channel', 'big', '--host', 'killed', '--rate', '4MB/s', ...common], dir, join(root, 'killed.log'));
    await waitFor('a first file staged', async () => (await readdir(join(dir, '.staging-v5')).catch(() => [])).length > 0, 30_000);
    await agent.kill('SIGKILL');
    assert.equal(await currentVersion(dir), null);
    const restarted = await cli(['sync', 'llm', '--channel', 'big', '--once', '--dir', dir, '--host', 'killed']);
    assert.equal(restarted.code, 0, restarted.stderr);
    const resumed = Number(/(\d+) resumed/.exec(restarted.stderr)?.[1]);
    assert.ok(resumed >= 2 * MiB, restarted.stderr);
    assert.equal(await currentVersion(dir), 'v5');
    assert.deepEqual(await treeHashes(join(dir, 'current')), await treeHashes(join(source, 'llm/v5')));
    await assert.rejects(stat(join(dir, '.staging-v5')));
  });

  // Before the next test: the watch must be live when etcd goes down, not still recovering.
  test('after an etcd outage the watching agent watches again and follows the channel', async () => {
    const breaks = async () => (await readFile(join(root, 'watcher.log'), 'utf8')).split('watch on llm/watch broke').length - 1;
    const before = await breaks();
    etcd.kill();
    try {
      await waitFor('the watcher to notice', async () => (await breaks()) > before, 60_000);
      assert.equal(await currentVersion(watcher!.dir), 'v2');
    } finally {
      await etcd.restart();
    }
    await cliJson(['release', 'rollback', 'llm', '--channel', 'watch']);
    await waitFor('watcher back on v1', async () => (await currentVersion(watcher!.dir)) === 'v1', 60_000);
  });

  test('with etcd down, commands fail with ETCD_UNAVAILABLE and the current version stays', async () => {
    const dir = join(root, 'careful');
    etcd.kill();
    try {
      assert.equal(await errorCode(['release', 'promote', 'llm', 'v2', '--channel', 'prod']), 'ETCD_UNAVAILABLE');
      assert.equal(await errorCode(['sync', 'llm', '--channel', 'staging', '--once', '--dir', dir, '--host', 'careful']), 'ETCD_UNAVAILABLE');
      assert.equal(await currentVersion(dir), 'v1');
      for (const agent of agents) assert.equal(await currentVersion(agent.dir), 'v1');
    } finally {
      await etcd.restart();
    }
  });

  // Last: it leaves etcd empty.
  test('etcd restored from nothing (its data lost, a new cluster at the same endpoint): agents keep their version and say CHANNEL_NOT_FOUND; published and promoted again, they follow', async () => {
    const before = await Promise.all(agents.map(async (a) => [await currentVersion(a.dir), await treeHashes(join(a.dir, 'current'))] as const));
    await etcd.wipe();
    type Status = { agents: { host: string; current: string | null; phase: string; error: string | null }[] };
    const lost = async () => {
      const { agents: hosts } = (await cliJson(['release', 'status', 'llm'])) as Status;
      return hosts.length === agents.length + 1 && hosts.every((h) => h.phase === 'error' && h.error?.startsWith('CHANNEL_NOT_FOUND'));
    };
    await waitFor('every agent (and the watcher) reporting CHANNEL_NOT_FOUND in the new cluster', lost, 60_000);
    // Several rounds of the 200 ms agents later: nothing moved, nothing removed.
    await new Promise((r) => setTimeout(r, 2000));
    assert.ok(await lost());
    for (const [i, agent] of agents.entries()) {
      assert.equal(await currentVersion(agent.dir), before[i]![0]);
      assert.deepEqual(await treeHashes(join(agent.dir, 'current')), before[i]![1]);
    }
    assert.equal(await currentVersion(watcher!.dir), 'v1');
    assert.equal(await errorCode(['release', 'promote', 'llm', 'v2', '--channel', 'prod']), 'RELEASE_NOT_FOUND');
    assert.equal(await errorCode(['release', 'rollback', 'llm', '--channel', 'prod']), 'CHANNEL_NOT_FOUND');

    await publish('v2', 'llm/v2');
    await cliJson(['release', 'promote', 'llm', 'v2', '--channel', 'prod']);
    for (const agent of agents) await waitFor(`${agent.dir} on v2`, async () => (await currentVersion(agent.dir)) === 'v2', 60_000);
    for (const agent of agents) assert.deepEqual(await treeHashes(join(agent.dir, 'current')), await treeHashes(join(source, 'llm/v2')));
  });
});
