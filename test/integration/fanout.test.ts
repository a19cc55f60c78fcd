import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { sha256 } from '../harness/cli.js';
import { waitFor } from '../harness/ports.js';

const MiB = 1024 * 1024;

async function readAll(client: FanoutClient, path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of (await client.createReadStream(path)) as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}

async function total(workers: WorkerProcess[], metric: string): Promise<number> {
  const values = await Promise.all(workers.map(async (w) => (await w.metrics())[metric] ?? 0));
  return values.reduce((a, b) => a + b, 0);
}

/** Many readers, one source: every page is read from the source once in the whole cluster. */
for (const replication of [1, 2]) {
  describe(`cluster-wide single flight, replication ${replication}`, () => {
    let source: string;
    let workers: WorkerProcess[];

    before(async () => {
      source = await mkdtemp(join(tmpdir(), 'fanout-fan-'));
      workers = await startCluster(3, { mounts: { data: source }, pageSize: '1MiB', replication, sourceRate: '300MB/s' });
      // The budget is leased (lib/lines): until a worker's first grant its reads wait, and a
      // reader would hedge them to another worker (a second source read).
      await waitFor('every worker to hold its share of the budget', async () => {
        const statuses = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/status`)).json()) as { lines: { mode: string }[] }));
        return statuses.every((s) => s.lines.every((l) => l.mode === 'lease'));
      });
    });

    after(async () => {
      await Promise.all((workers ?? []).map((w) => w.destroy()));
      await rm(source, { recursive: true, force: true });
    });

    test('8 concurrent readers of a cold file cause exactly one source read per page', async () => {
      const body = randomBytes(16 * MiB);
      await writeFile(join(source, 'hot.bin'), body);
      // Each reader enters through a different worker, as clients on different hosts would.
      const clients = Array.from({ length: 8 }, (_, i) => new FanoutClient({ endpoint: workers[i % 3]!.url }));
      try {
        const hashes = await Promise.all(clients.map((c) => readAll(c, '/data/hot.bin')));
        for (const hash of hashes) assert.equal(hash, sha256(body));
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
      assert.equal(await total(workers, 'fanout_source_reads_total'), 16);
      assert.equal(await total(workers, 'fanout_source_bytes_total'), body.length);
      if (replication > 1) assert.ok((await total(workers, 'fanout_peer_bytes_total')) > 0, 'replicas filled from the primary');
    });

    test('a page asked of every worker is still read from the source once (non-owners relay)', async () => {
      const body = randomBytes(4 * MiB + 3);
      await writeFile(join(source, 'relay.bin'), body);
      const stat = (await (await fetch(`${workers[0]!.url}/v1/stat/data/relay.bin`)).json()) as { version: string; size: number };
      const readsBefore = await total(workers, 'fanout_source_reads_total');
      for (let index = 0; index < 5; index++) {
        const parts = await Promise.all(
          workers.map(async (w) => {
            const res = await fetch(`${w.url}/v1/page/data/relay.bin?v=${encodeURIComponent(stat.version)}&size=${stat.size}&i=${index}`);
            assert.equal(res.status, 200);
            return Buffer.from(await res.arrayBuffer());
          }),
        );
        for (const part of parts) assert.deepEqual(part, body.subarray(index * MiB, (index + 1) * MiB));
      }
      assert.equal((await total(workers, 'fanout_source_reads_total')) - readsBefore, 5);
    });

    test("idle, each worker holds an equal share of the mount's source budget", async () => {
      // Shares are leased by demand (lib/lines); with nothing waiting they settle at budget ÷ members.
      await waitFor('idle shares to settle', async () => {
        const rates = await Promise.all(workers.map(async (w) => ((await (await fetch(`${w.url}/v1/status`)).json()) as { sourceRates: Record<string, number> }).sourceRates));
        return rates.every((r) => r.data === 100_000_000);
      });
    });
  });
}
