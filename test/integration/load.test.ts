import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startCluster, TEST_ADMIN_TOKEN, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { fanout, sha256 } from '../harness/cli.js';
import { treeHashes } from '../harness/release.js';
import { FanoutClient } from '../../src/client/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { HashRing } from '../../src/lib/hashring/index.js';

const MiB = 1024 * 1024;
const adminHeaders = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

async function metric(workers: WorkerProcess[], name: string): Promise<number> {
  const values = await Promise.all(workers.map(async (w) => (await w.metrics())[name] ?? 0));
  return values.reduce((a, b) => a + b, 0);
}

describe('preload, pin, free and TTL across the cluster', () => {
  let etcd: EtcdServer;
  let workers: WorkerProcess[];
  let root: string;
  let source: string;
  let common: string[];
  const files = new Map<string, Buffer>();

  const cli = async (args: string[]) => {
    const r = await fanout([...args, ...common], { FANOUT_TOKEN: TEST_ADMIN_TOKEN });
    return { ...r, out: r.stdout.toString() };
  };
  const cliJson = async (args: string[]) => {
    const r = await cli([...args, '--json']);
    if (r.code !== 0) throw new Error(`fanout ${args.join(' ')} failed: ${r.out}${r.stderr}`);
    try {
      return JSON.parse(r.out);
    } catch {
      return JSON.parse(r.out.trim().split('\n').pop()!); // NDJSON: the last line is the report
    }
  };
  const readThrough = async (path: string) => {
    const r = await fanout(['cat', path, '--endpoint', workers[0]!.url]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };

  /** The workers that own the pages of these files (path, page count), as the ring of the cluster says. */
  const pageOwners = async (paths: [string, number][]) => {
    const client = new FanoutClient({ endpoint: workers[0]!.url });
    try {
      const ring = new HashRing((await client.cluster()).members);
      const owners = new Set<string>();
      for (const [path, pages] of paths) {
        const { version, size } = await client.stat(`/data/${path}`);
        for (let index = 0; index < pages; index++) owners.add(ring.owners(pageKey({ mount: 'data', path, version, size, index }, MiB), 1)[0]!.id);
      }
      return owners;
    } finally {
      await client.close();
    }
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-load-'));
    source = join(root, 'source');
    const put = async (rel: string, size: number) => {
      const data = randomBytes(size);
      files.set(rel, data);
      await mkdir(dirname(join(source, rel)), { recursive: true });
      await writeFile(join(source, rel), data);
    };
    await put('set/a.bin', 3 * MiB + 7);
    await put('set/sub/b.bin', 2 * MiB);
    await put('pinned.bin', 4 * MiB);
    await put('ttl.bin', 2 * MiB);
    for (let i = 0; i < 6; i++) await put(`filler/f${i}.bin`, 4 * MiB);
    await put('rel/v1/m.bin', 3 * MiB);
    etcd = await startEtcd();
    // 12 MiB per worker: the filler (24 MiB) cannot fit next to everything else, so LRU must evict.
    workers = await startCluster(2, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: '1MiB', capacity: '12MiB', statTtl: '100ms' });
    common = ['--endpoint', workers[0]!.url, '--etcd', etcd.endpoint];
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('load splits a directory over the page owners, and a second run only finds pages present', async () => {
    const before = await metric(workers, 'fanout_source_bytes_total');
    const report = await cliJson(['load', '/data/set/']);
    assert.equal(report.pages, 4 + 2);
    assert.equal(report.loaded, 6);
    assert.equal(report.bytesLoaded, 5 * MiB + 7);
    // Each worker loads the pages it owns; two workers on random ports may own all six between them or alone.
    assert.deepEqual(new Set(Object.keys(report.workers)), await pageOwners([['set/a.bin', 4], ['set/sub/b.bin', 2]]), JSON.stringify(report.workers));
    assert.equal((await metric(workers, 'fanout_source_bytes_total')) - before, 5 * MiB + 7);
    const again = await cliJson(['load', '/data/set/', '--verify']);
    assert.deepEqual([again.loaded, again.present, again.verified], [0, 6, 6]);
    const middle = await metric(workers, 'fanout_source_bytes_total');
    assert.deepEqual(await readThrough('/data/set/sub/b.bin'), files.get('set/sub/b.bin'));
    assert.equal(await metric(workers, 'fanout_source_bytes_total'), middle);
  });

  test('a preloaded release syncs without reading the source', async () => {
    await cliJson(['release', 'publish', 'rel', '/data/rel/v1/', '--version', 'v1', '--mount', `data=${source}`]);
    await cliJson(['release', 'promote', 'rel', 'v1', '--channel', 'prod']);
    const report = await cliJson(['load', '--release', 'rel@v1', '--verify']);
    assert.equal(report.loaded, 3);
    const before = await metric(workers, 'fanout_source_bytes_total');
    const dir = join(root, 'host');
    const r = await cli(['sync', 'rel', '--channel', 'prod', '--once', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await treeHashes(join(dir, 'current')), await treeHashes(join(source, 'rel/v1')));
    assert.equal((await metric(workers, 'fanout_source_bytes_total')) - before, 0);
  });

  test('pinned pages survive eviction; free drops them', async () => {
    await cliJson(['load', '/data/pinned.bin', '--pin']);
    const evictionsBefore = await metric(workers, 'fanout_evictions_total');
    await cliJson(['load', '/data/filler/']);
    assert.ok((await metric(workers, 'fanout_evictions_total')) > evictionsBefore, 'the filler must force evictions');
    const before = await metric(workers, 'fanout_source_bytes_total');
    assert.equal(sha256(await readThrough('/data/pinned.bin')), sha256(files.get('pinned.bin')!));
    assert.equal((await metric(workers, 'fanout_source_bytes_total')) - before, 0, 'pinned pages were evicted');

    const freed = await cliJson(['free', '/data/pinned.bin']);
    assert.equal(freed.workers.reduce((s: number, w: { freed: number }) => s + w.freed, 0), 4);
    const policies = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/admin/policy`, { headers: adminHeaders })).json()) as { pinned: number; rules: unknown[] }));
    assert.deepEqual(policies.map((p) => [p.pinned, p.rules.length]), [[0, 0], [0, 0]]);
    const before2 = await metric(workers, 'fanout_source_bytes_total');
    await readThrough('/data/pinned.bin');
    assert.equal((await metric(workers, 'fanout_source_bytes_total')) - before2, 4 * MiB);
  });

  test('pages with a TTL are dropped once it runs out', async () => {
    await cliJson(['load', '/data/ttl.bin']);
    await cliJson(['ttl', '/data/ttl.bin', '300ms']);
    await waitFor('TTL pages to be swept', async () => {
      const policies = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/admin/policy`, { headers: adminHeaders })).json()) as { withTtl: number }));
      return policies.every((p) => p.withTtl === 0);
    });
    const again = await cliJson(['load', '/data/ttl.bin']);
    assert.equal(again.loaded, 2, 'expired pages must be gone and loaded again');
  });
});
