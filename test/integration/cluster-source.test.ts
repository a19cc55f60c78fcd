import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { fanout, sha256 } from '../harness/cli.js';
import { Origin } from '../harness/origin.js';
import { freePort, waitFor } from '../harness/ports.js';
import { WorkerProcess, startCluster } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** "fanout://127.0.0.1:P1,127.0.0.1:P2/data": a mount of another cluster, through any of its workers. */
function fanoutUri(workers: WorkerProcess[], mount = 'data'): string {
  return `fanout://${workers.map((w) => new URL(w.url).host).join(',')}/${mount}`;
}

async function total(workers: WorkerProcess[], metric: string): Promise<number> {
  const values = await Promise.all(workers.map(async (w) => (await w.metrics())[metric] ?? 0));
  return values.reduce((a, b) => a + b, 0);
}

/** Counters that tell how many bytes crossed each "line": origin → A, A → B (served by A, read from its source by B). */
async function counters(origin: Origin, a: WorkerProcess[], b: WorkerProcess[]) {
  return {
    origin: origin.counters.bytes,
    servedByA: await total(a, 'fanout_bytes_served_total'),
    sourceOfB: await total(b, 'fanout_source_bytes_total'),
  };
}

/**
 * `fanout cat` through a worker, asking each page of its owner only (no hedge): a relay through
 * another worker whose owner misses its 2 s health check on this loaded machine reads the source
 * itself (the single flight's fallback for a dead owner), and this file counts crossings.
 */
async function cat(worker: WorkerProcess, path: string): Promise<Buffer> {
  const result = await fanout(['cat', path, '--endpoint', worker.url, '--hedge', 'off']);
  assert.equal(result.code, 0, `fanout cat ${path} via ${worker.url}: ${result.stderr}`);
  return result.stdout;
}

/**
 * Cluster A (2 workers) over a counting HTTP origin, cluster B (2 workers) over fanout://A, and
 * cluster C (1 worker) over fanout://B: real worker processes on loopback, static membership.
 */
describe('a cluster as the source of another', () => {
  let origin: Origin;
  let a: WorkerProcess[] = [];
  let b: WorkerProcess[] = [];
  let c: WorkerProcess[] = [];
  const files = new Map<string, Buffer>();
  const put = async (name: string, size: number) => {
    const data = randomBytes(size);
    files.set(name, data);
    await origin.put(name, data);
    return data;
  };

  before(async () => {
    origin = await Origin.start();
    const common = { pageSize: '1MiB', statTtl: '100ms', scrub: { rate: 'off' } } as const;
    a = await startCluster(2, { ...common, mounts: { data: origin.url } });
    b = await startCluster(2, { ...common, mounts: { data: fanoutUri(a) } });
    c = await startCluster(1, { ...common, mounts: { data: fanoutUri(b) } });
  });

  after(async () => {
    await Promise.all([...a, ...b, ...c].map((w) => w.destroy()));
    await origin?.close();
  });

  test('a file cached nowhere, read in B: the origin is read once and each page crosses B→A once', async () => {
    const data = await put('once.bin', 6 * MiB + 123);
    const before = await counters(origin, a, b);
    assert.equal(sha256(await cat(b[0]!, '/data/once.bin')), sha256(data));
    // Read again on the other worker of B: all of it is in B now.
    assert.equal(sha256(await cat(b[1]!, '/data/once.bin')), sha256(data));
    const after = await counters(origin, a, b);
    assert.equal(after.origin - before.origin, data.length, 'origin bytes');
    assert.equal(after.servedByA - before.servedByA, data.length, 'bytes A served to B');
    assert.equal(after.sourceOfB - before.sourceOfB, data.length, 'bytes B read from its source (A)');
  });

  test('the same file has the same version in both clusters', async () => {
    await put('versioned.bin', 1000);
    const inA = new FanoutClient({ endpoint: a[0]!.url });
    const inB = new FanoutClient({ endpoint: b[0]!.url });
    try {
      const [statA, statB] = await Promise.all([inA.stat('/data/versioned.bin'), inB.stat('/data/versioned.bin')]);
      assert.equal(statB.version, statA.version);
      assert.equal(statB.size, 1000);
      // An HTTP origin cannot be listed: B says so with A's code, not as a broken source.
      await assert.rejects(inB.list('/data/'), (err: { code?: string }) => err.code === 'NOT_LISTABLE');
    } finally {
      await Promise.all([inA.close(), inB.close()]);
    }
  });

  test('concurrent readers on different workers of B still move each page over the line once', async () => {
    const data = await put('concurrent.bin', 8 * MiB + 7);
    const before = await counters(origin, a, b);
    const reads = await Promise.all([cat(b[0]!, '/data/concurrent.bin'), cat(b[1]!, '/data/concurrent.bin'), cat(b[0]!, '/data/concurrent.bin'), cat(b[1]!, '/data/concurrent.bin')]);
    for (const read of reads) assert.equal(sha256(read), sha256(data));
    const after = await counters(origin, a, b);
    assert.equal(after.origin - before.origin, data.length, 'origin bytes');
    assert.equal(after.servedByA - before.servedByA, data.length, 'bytes A served to B');
    assert.equal(after.sourceOfB - before.sourceOfB, data.length, 'bytes B read from A');
  });

  test('a chain C over B over A reads the origin once and moves each page over each line once', async () => {
    const data = await put('chain.bin', 5 * MiB + 99);
    const before = { ...(await counters(origin, a, b)), sourceOfC: await total(c, 'fanout_source_bytes_total') };
    assert.equal(sha256(await cat(c[0]!, '/data/chain.bin')), sha256(data));
    const after = { ...(await counters(origin, a, b)), sourceOfC: await total(c, 'fanout_source_bytes_total') };
    assert.equal(after.origin - before.origin, data.length, 'origin bytes');
    assert.equal(after.servedByA - before.servedByA, data.length, 'bytes A served to B');
    assert.equal(after.sourceOfB - before.sourceOfB, data.length, 'bytes B read from A');
    assert.equal(after.sourceOfC - before.sourceOfC, data.length, 'bytes C read from B');
  });

  test('a remote file that changes mid-read fails the read with SOURCE_CHANGED, never a mix', async () => {
    const old = await put('changing.bin', 4 * MiB);
    const client = new FanoutClient({ endpoint: b.map((w) => w.url), hedge: 'off' });
    try {
      const file = await client.stat('/data/changing.bin');
      const first = Buffer.concat(await client.fetchPage(file, 0));
      assert.ok(first.equals(old.subarray(0, MiB)), 'page 0 is the old version');
      const fresh = randomBytes(4 * MiB);
      await origin.replace('changing.bin', fresh);
      await assert.rejects(
        (async () => {
          for await (const _ of await client.readFile(file)) void _;
        })(),
        (err: { code?: string }) => err.code === 'SOURCE_CHANGED',
      );
      // A reader that starts now gets the new version whole.
      await waitFor('B to see the new version', async () => (await client.stat('/data/changing.bin')).version !== file.version);
      assert.equal(sha256(await cat(b[1]!, '/data/changing.bin')), sha256(fresh));
    } finally {
      await client.close();
    }
  });

  test('a cluster whose source is itself is refused at start with a clear error', async () => {
    const ports = [await freePort(), await freePort()];
    const members = ports.map((port, i) => ({ id: `loop${i}`, url: `http://127.0.0.1:${port}` }));
    const self = `fanout://${members.map((m) => new URL(m.url).host).join(',')}/data`;
    const dir = await mkdtemp(join(tmpdir(), 'fanout-loop-'));
    try {
      const config = join(dir, 'worker.json');
      const worker = { id: 'loop0', listen: `127.0.0.1:${ports[0]}`, dataDir: join(dir, 'data'), pageSize: '1MiB', mounts: { data: self }, membership: { static: members } };
      await writeFile(config, JSON.stringify(worker));
      const result = await fanout(['worker', '--config', config]);
      assert.equal(result.code, 1, 'the worker exits');
      assert.match(result.stderr, /INVALID_CONFIG: mount "data": its source http:\/\/127\.0\.0\.1:\d+ is this cluster itself \(a loop\)/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a source read that carries this cluster\'s own id is refused (a loop through an address it does not know)', async () => {
    const info = (await (await fetch(`${a[0]!.url}/v1/cluster`)).json()) as { clusterId: string; upstream: string[] };
    assert.match(info.clusterId, /^[0-9a-f]{16}$/);
    const refused = await fetch(`${a[0]!.url}/v1/stat/data/once.bin`, { headers: { 'x-fanout-via': info.clusterId } });
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'INVALID_CONFIG');
    const other = await fetch(`${a[0]!.url}/v1/stat/data/once.bin`, { headers: { 'x-fanout-via': 'another-cluster' } });
    assert.equal(other.status, 200);
    // C reads through B and A: its /v1/cluster names both, so neither can take C as a source.
    const viewOfC = (await (await fetch(`${c[0]!.url}/v1/cluster`)).json()) as { clusterId: string; upstream: string[] };
    const viewOfB = (await (await fetch(`${b[0]!.url}/v1/cluster`)).json()) as { clusterId: string; upstream: string[] };
    assert.deepEqual(viewOfC.upstream.sort(), [viewOfB.clusterId, info.clusterId].sort());
  });

  test('a loop closed after start (X over Y over X) fails reads with INVALID_CONFIG instead of circling', async () => {
    const [px, py] = [await freePort(), await freePort()];
    const common = { pageSize: '1MiB', statTtl: '100ms' };
    const x = await WorkerProcess.start({ ...common, id: 'x', mounts: { data: `fanout://127.0.0.1:${py}/data` } }, px);
    const y = await WorkerProcess.start({ ...common, id: 'y', mounts: { data: `fanout://127.0.0.1:${px}/data` } }, py);
    try {
      const result = await fanout(['cat', '/data/anything.bin', '--endpoint', y.url, '--json']);
      assert.notEqual(result.code, 0);
      const error = JSON.parse(result.stdout.toString()).error as { code: string; message: string };
      assert.equal(error.code, 'INVALID_CONFIG', error.message);
      assert.match(error.message, /loop/);
    } finally {
      await Promise.all([x.destroy(), y.destroy()]);
    }
  });

  test('remote cluster stopped: pages cached in B keep serving, uncached ones fail with SOURCE_ERROR and nothing partial is stored', async () => {
    const cached = await put('cached.bin', 3 * MiB + 5);
    const uncached = await put('uncached.bin', 3 * MiB);
    const client = new FanoutClient({ endpoint: b.map((w) => w.url), hedge: 'off', timeouts: { connectMs: 2000, firstByteMs: 20_000 } });
    try {
      const cachedFile = await client.stat('/data/cached.bin');
      const uncachedFile = await client.stat('/data/uncached.bin');
      assert.equal(sha256(await cat(b[0]!, '/data/cached.bin')), sha256(cached));
      const pagesBefore = await total(b, 'fanout_store_pages');
      await Promise.all(a.map((w) => w.kill()));
      const chunks: Buffer[] = [];
      for await (const chunk of await client.readFile(cachedFile)) chunks.push(chunk as Buffer);
      assert.equal(sha256(Buffer.concat(chunks)), sha256(cached), 'cached pages still served');
      await assert.rejects(
        (async () => {
          for await (const _ of await client.readFile(uncachedFile)) void _;
        })(),
        (err: { code?: string }) => err.code === 'SOURCE_ERROR',
      );
      assert.equal(await total(b, 'fanout_store_pages'), pagesBefore, 'no page of the uncached file stored');
      void uncached;
    } finally {
      await client.close();
    }
  });
});
