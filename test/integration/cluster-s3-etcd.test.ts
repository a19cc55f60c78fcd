import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { FanoutClient } from '../../src/client/index.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startS3Server, type S3TestServer } from '../harness/s3.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { sha256 } from '../harness/cli.js';

const MiB = 1024 * 1024;

async function hashStream(stream: Readable, onFirstChunk?: () => Promise<void>): Promise<string> {
  const hash = createHash('sha256');
  let first = true;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    if (first && onFirstChunk) {
      first = false;
      await onFirstChunk();
    }
  }
  return hash.digest('hex');
}

async function clusterMembers(worker: WorkerProcess): Promise<{ members: { id: string }[]; stale: boolean }> {
  return (await (await fetch(`${worker.url}/v1/cluster`)).json()) as { members: { id: string }[]; stale: boolean };
}

async function sourceRates(worker: WorkerProcess): Promise<Record<string, number>> {
  return ((await (await fetch(`${worker.url}/v1/status`)).json()) as { sourceRates: Record<string, number> }).sourceRates;
}

async function sumMetric(workers: WorkerProcess[], name: string): Promise<number> {
  const values = await Promise.all(workers.map(async (w) => (await w.metrics())[name] ?? 0));
  return values.reduce((a, b) => a + b, 0);
}

/**
 * Three worker processes with etcd membership over a real S3 server: the foundation's
 * end-to-end behaviour.
 */
describe('a 3-worker cluster with etcd membership over an S3 source', () => {
  let etcd: EtcdServer;
  let s3: S3TestServer;
  let workers: WorkerProcess[];
  let client: FanoutClient;
  const files = new Map<string, Buffer>();

  before(async () => {
    [etcd, s3] = await Promise.all([startEtcd(), startS3Server()]);
    await s3.bucket('models');
    for (const [key, size] of [['llm/model.bin', 24 * MiB + 5], ['llm/shards/big.bin', 40 * MiB], ['index/hot.bin', 16 * MiB], ['small.txt', 20]] as const) {
      const body = randomBytes(size);
      files.set(key, body);
      await s3.put('models', key, body);
    }
    workers = await startCluster(3, {
      etcd: etcd.endpoint,
      mounts: { models: 's3://models' },
      s3: s3.options,
      pageSize: '1MiB',
      statTtl: '200ms',
      sourceRate: '600MB/s',
    });
    client = new FanoutClient({ endpoint: workers.map((w) => w.url), membershipRefreshMs: 200 });
  });

  after(async () => {
    await client?.close();
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await Promise.all([etcd?.stop(), s3?.stop()]);
  });

  test('every worker sees all three members through etcd', async () => {
    for (const worker of workers) {
      const view = await clusterMembers(worker);
      assert.deepEqual(view.members.map((m) => m.id).sort(), ['w1', 'w2', 'w3']);
      assert.equal(view.stale, false);
    }
  });

  test('reads equal the source, pages spread over the workers, the source read once', async () => {
    const body = files.get('llm/model.bin')!;
    const stream = await client.createReadStream('/models/llm/model.bin');
    assert.equal(await hashStream(stream), sha256(body));
    assert.equal(await sumMetric(workers, 'fanout_source_bytes_total'), body.length);
    for (const worker of workers) {
      assert.ok(((await worker.metrics()).fanout_store_pages ?? 0) > 0, `${worker.id} holds some pages`);
    }
    const again = await client.createReadStream('/models/llm/model.bin', { start: 3 * MiB - 7, end: 5 * MiB + 3 });
    const parts: Buffer[] = [];
    for await (const chunk of again as AsyncIterable<Buffer>) parts.push(chunk);
    assert.deepEqual(Buffer.concat(parts), body.subarray(3 * MiB - 7, 5 * MiB + 3));
    assert.equal(await sumMetric(workers, 'fanout_source_bytes_total'), body.length, 'warm reads do not touch the source');
  });

  test('8 concurrent readers of a cold file cause one source read per page', async () => {
    const body = files.get('index/hot.bin')!;
    const readsBefore = await sumMetric(workers, 'fanout_source_reads_total');
    const bytesBefore = await sumMetric(workers, 'fanout_source_bytes_total');
    const readers = Array.from({ length: 8 }, () => new FanoutClient({ endpoint: workers[0]!.url }));
    try {
      const hashes = await Promise.all(readers.map(async (r) => hashStream(await r.createReadStream('/models/index/hot.bin'))));
      for (const hash of hashes) assert.equal(hash, sha256(body));
    } finally {
      await Promise.all(readers.map((r) => r.close()));
    }
    assert.equal((await sumMetric(workers, 'fanout_source_reads_total')) - readsBefore, 16);
    assert.equal((await sumMetric(workers, 'fanout_source_bytes_total')) - bytesBefore, body.length);
  });

  test('a worker killed during a large read: the read completes with the right bytes', async () => {
    const body = files.get('llm/shards/big.bin')!;
    const reader = new FanoutClient({ endpoint: workers.map((w) => w.url), concurrency: 2 });
    try {
      const stream = await reader.createReadStream('/models/llm/shards/big.bin');
      const hash = await hashStream(stream, () => workers[1]!.kill());
      assert.equal(hash, sha256(body));
    } finally {
      await reader.close();
    }
  });

  test('the ring and the source budget follow a departure and a rejoin', async () => {
    await waitFor('w2 to leave the ring', async () => (await clusterMembers(workers[0]!)).members.length === 2);
    // Shares are leased by demand (lib/lines); idle, they settle at budget ÷ live members.
    await waitFor('budget re-split over 2 live workers', async () => (await sourceRates(workers[0]!)).models === 300_000_000);
    await workers[1]!.launch();
    await waitFor('w2 to rejoin', async () => {
      const views = await Promise.all(workers.map(clusterMembers));
      return views.every((v) => v.members.length === 3);
    });
    await waitFor('budget re-split over 3 live workers', async () => (await Promise.all(workers.map(sourceRates))).every((r) => r.models === 200_000_000));
    const stream = await client.createReadStream('/models/llm/shards/big.bin');
    assert.equal(await hashStream(stream), sha256(files.get('llm/shards/big.bin')!));
  });

  test('a file replaced at the source is read as its new content only', async () => {
    const v2 = randomBytes(3 * MiB + 1);
    await s3.put('models', 'small.txt', v2);
    await waitFor('the new object to be visible', async () => {
      const hash = await hashStream(await client.createReadStream('/models/small.txt'));
      assert.ok(hash === sha256(files.get('small.txt')!) || hash === sha256(v2), 'never a mix of versions');
      return hash === sha256(v2);
    });
  });

  test('reads keep working with the last known membership while etcd is down', async () => {
    await etcd.kill();
    await waitFor('workers to notice etcd is down', async () => (await clusterMembers(workers[0]!)).stale);
    const view = await clusterMembers(workers[0]!);
    assert.equal(view.members.length, 3, 'last known membership kept');
    const stream = await new FanoutClient({ endpoint: workers[2]!.url }).createReadStream('/models/llm/model.bin');
    assert.equal(await hashStream(stream), sha256(files.get('llm/model.bin')!));
    await etcd.restart();
    await waitFor('membership to recover', async () => {
      const views = await Promise.all(workers.map(clusterMembers));
      return views.every((v) => !v.stale && v.members.length === 3);
    });
  });
});
