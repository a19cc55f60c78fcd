import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fanout } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { currentVersion, treeHashes } from '../harness/release.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
/** A manifest and the reads of it: a few KiB, well under one page. */
const MANIFEST_SLACK = 64 * 1024;

async function sourceBytes(workers: WorkerProcess[]): Promise<number> {
  const values = await Promise.all(workers.map(async (w) => (await w.metrics()).fanout_source_bytes_total ?? 0));
  return values.reduce((x, y) => x + y, 0);
}

async function put(root: string, rel: string, data: Buffer | string): Promise<void> {
  await mkdir(dirname(join(root, rel)), { recursive: true });
  await writeFile(join(root, rel), data);
}

/**
 * A release published in cluster A (over a directory) and synced by hosts of cluster B, whose
 * source is fanout://A: pages go by content hash, so a page two releases share crosses B→A once.
 */
describe('a release published in one cluster, synced through another that reads it as its source', () => {
  let etcd: EtcdServer;
  let root: string;
  let source: string;
  let a: WorkerProcess[] = [];
  let b: WorkerProcess[] = [];
  let common: string[];

  const cli = async (args: string[]) => {
    const result = await fanout([...args, '--etcd', etcd.endpoint]);
    assert.equal(result.code, 0, `fanout ${args.join(' ')}: ${result.stdout}${result.stderr}`);
    return result;
  };
  const syncOnce = (host: string, dir: string) => cli(['sync', 'llm', '--channel', 'prod', '--once', '--dir', dir, '--host', host, '--endpoint', b[0]!.url]);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-dc-release-'));
    source = join(root, 'source');
    await put(source, 'llm/v1/a.bin', randomBytes(5 * MiB + 123));
    await put(source, 'llm/v1/b/c.bin', randomBytes(2 * MiB));
    await put(source, 'llm/v1/small.txt', 'hello release\n');
    etcd = await startEtcd();
    const shared = { pageSize: '1MiB', statTtl: '100ms', scrub: { rate: 'off' } } as const;
    a = await startCluster(2, { ...shared, mounts: { data: source } });
    b = await startCluster(2, { ...shared, mounts: { data: `fanout://${a.map((w) => new URL(w.url).host).join(',')}/data` } });
    common = ['--endpoint', a[0]!.url];
  });

  after(async () => {
    await Promise.all([...a, ...b].map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('v1 synced by a host of B equals the source; each page crossed once', async () => {
    await cli(['release', 'publish', 'llm', '/data/llm/v1/', '--version', 'v1', '--mount', `data=${source}`, ...common]);
    await cli(['release', 'promote', 'llm', 'v1', '--channel', 'prod', ...common]);
    const [beforeA, beforeB] = [await sourceBytes(a), await sourceBytes(b)];
    const host = join(root, 'host1');
    await syncOnce('host1', host);
    assert.equal(await currentVersion(host), 'v1');
    assert.deepEqual(await treeHashes(join(host, 'current')), await treeHashes(join(source, 'llm/v1')));
    const v1 = 7 * MiB + 123 + 14;
    const [crossedA, crossedB] = [(await sourceBytes(a)) - beforeA, (await sourceBytes(b)) - beforeB];
    assert.ok(crossedB >= v1 && crossedB <= v1 + MANIFEST_SLACK, `bytes B read from A: ${crossedB}`);
    assert.ok(crossedA >= v1 && crossedA <= v1 + MANIFEST_SLACK, `bytes A read from its directory: ${crossedA}`);
  });

  test('v2 with one changed page, synced by a fresh host of B: only that page crosses B→A', async () => {
    await cp(join(source, 'llm/v1'), join(source, 'llm/v2'), { recursive: true });
    const file = await open(join(source, 'llm/v2/a.bin'), 'r+');
    await file.write(randomBytes(100), 0, 100, 3 * MiB + 5); // page 3 of a.bin
    await file.close();
    await cli(['release', 'publish', 'llm', '/data/llm/v2/', '--version', 'v2', '--mount', `data=${source}`, ...common]);
    await cli(['release', 'promote', 'llm', 'v2', '--channel', 'prod', ...common]);
    const [beforeA, beforeB] = [await sourceBytes(a), await sourceBytes(b)];
    // A host with nothing on disk: every page comes through B, which holds all but one by content.
    const host = join(root, 'host2');
    await syncOnce('host2', host);
    assert.equal(await currentVersion(host), 'v2');
    assert.deepEqual(await treeHashes(join(host, 'current')), await treeHashes(join(source, 'llm/v2')));
    const [crossedA, crossedB] = [(await sourceBytes(a)) - beforeA, (await sourceBytes(b)) - beforeB];
    assert.ok(crossedB >= MiB && crossedB <= MiB + MANIFEST_SLACK, `bytes B read from A for v2: ${crossedB}`);
    assert.ok(crossedA >= MiB && crossedA <= MiB + MANIFEST_SLACK, `bytes A read from its directory for v2: ${crossedA}`);
  });
});
