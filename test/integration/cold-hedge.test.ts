import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { startCluster, TEST_ADMIN_TOKEN, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
const PAGES = 8;

async function misses(worker: WorkerProcess): Promise<number> {
  const status = (await (await fetch(`${worker.url}/v1/status`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } })).json()) as { misses: number };
  return status.misses;
}

/** The heads of a page request, 1xx included, with or without asking to be told of a fill. */
function pageHeads(worker: WorkerProcess, path: string, askProgress: boolean): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const statuses: number[] = [];
    const headers: Record<string, string> = { authorization: `Bearer ${TEST_ADMIN_TOKEN}`, ...(askProgress ? { 'x-fanout-progress': '1' } : {}) };
    const req = request(`${worker.url}${path}`, { headers }, (res) => {
      statuses.push(res.statusCode ?? 0);
      res.resume();
      res.on('end', () => resolve(statuses)).on('error', reject);
    });
    req.on('information', (info) => statuses.push(info.statusCode));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Cold pages over a slow source (1 MB/s for the cluster: a 1 MiB page takes about two seconds to
 * fill, and a worker fills one at a time): the owner says at once that it is filling, so a reader
 * with a 2 s hedge delay waits for pages queued there instead of asking another worker, which
 * would only relay the same fill.
 */
describe('cold pages and hedging', () => {
  let workers: WorkerProcess[];
  let source: string;
  const data = randomBytes(PAGES * MiB);

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-cold-'));
    await writeFile(join(source, 'f.bin'), data);
    await writeFile(join(source, 'g.bin'), randomBytes(MiB));
    await writeFile(join(source, 'h.bin'), randomBytes(MiB));
    // One fill at a time per worker: a reader's readahead pages queue there, silent but for the 102.
    workers = await startCluster(2, { mounts: { data: source }, pageSize: '1MiB', sourceRate: '1MB/s', limits: { fillsPerMount: 1 } });
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  test('a reader does not hedge pages their owner reports as being filled', async () => {
    const client = new FanoutClient({ endpoint: workers[0]!.url, token: TEST_ADMIN_TOKEN, hedge: 2000 });
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of await client.createReadStream('/data/f.bin')) chunks.push(chunk as Buffer);
      assert.ok(Buffer.concat(chunks).equals(data));
    } finally {
      await client.close();
    }
    // Each page was asked of its owner only: a hedge would have been a miss on the other worker too.
    const total = (await Promise.all(workers.map(misses))).reduce((a, b) => a + b, 0);
    assert.equal(total, PAGES);
  });

  test('a worker answers 102 before a page it fills, only to readers that ask', async () => {
    const client = new FanoutClient({ endpoint: workers[0]!.url, token: TEST_ADMIN_TOKEN });
    const paths: string[] = [];
    for (const name of ['g.bin', 'h.bin']) {
      const info = await client.stat(`/data/${name}`);
      paths.push(`/v1/page/data/${name}?v=${encodeURIComponent(info.version)}&size=${info.size}&i=0`);
    }
    await client.close();
    assert.deepEqual(await pageHeads(workers[0]!, paths[0]!, true), [102, 200]);
    assert.deepEqual(await pageHeads(workers[1]!, paths[1]!, false), [200]);
  });
});
