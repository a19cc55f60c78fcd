import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

async function sha256Of(client: FanoutClient, path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of (await client.createReadStream(path)) as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}

/** 'T' while SIGSTOPped (from /proc/PID/stat). */
async function processState(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

/**
 * A worker that stops answering without closing anything (SIGSTOP: a hung host, a stuck disk).
 * Reads must go around it, not wait for it: they all finish while it is still stopped.
 */
describe('a SIGSTOPped worker during concurrent reads', () => {
  let source: string;
  let workers: WorkerProcess[];
  let stopped: WorkerProcess;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-stop-'));
    workers = await startCluster(3, { mounts: { data: source }, pageSize: '1MiB' });
    stopped = workers[1]!;
  });

  after(async () => {
    stopped?.resume();
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  /** Readers enter through the workers that still run, as clients elsewhere would. */
  async function readConcurrently(path: string, expected: string, readers = 8): Promise<void> {
    const entries = workers.filter((w) => w !== stopped);
    const clients = Array.from({ length: readers }, (_, i) => new FanoutClient({ endpoint: entries[i % entries.length]!.url }));
    try {
      const hashes = await Promise.all(clients.map((c) => sha256Of(c, path)));
      for (const hash of hashes) assert.equal(hash, expected);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  }

  async function assertPagesOnEveryWorker(path: string, pages: number): Promise<void> {
    const info = (await (await fetch(`${workers[0]!.url}/v1/cluster`)).json()) as { members: { id: string; url: string; capacity: number }[] };
    const stat = (await (await fetch(`${workers[0]!.url}/v1/stat/data/${path}`)).json()) as { version: string; size: number };
    const ring = new HashRing(info.members);
    const owners = new Set<string>();
    for (let index = 0; index < pages; index++) {
      owners.add(ring.owners(pageKey({ mount: 'data', path, version: stat.version, size: stat.size, index }, MiB), 1)[0]!.id);
    }
    assert.equal(owners.size, 3, 'the file has pages on every worker, the stopped one included');
  }

  // A bound on waiting, not a timing assertion: undici's 300 s defaults would exceed it.
  const bound = { timeout: 120_000 };

  test('8 concurrent reads of a cached file all complete, with the right bytes, while the worker is stopped', bound, async () => {
    const body = randomBytes(24 * MiB);
    await writeFile(join(source, 'warm.bin'), body);
    await assertPagesOnEveryWorker('warm.bin', 24);
    const expected = createHash('sha256').update(body).digest('hex');
    await readConcurrently('/data/warm.bin', expected, 1); // every page cached on its owner
    stopped.pause();
    await readConcurrently('/data/warm.bin', expected);
    assert.equal(await processState(stopped.pid!), 'T', 'the worker was stopped the whole time');
  });

  test('8 concurrent reads of a file never read before also complete while the worker is stopped', bound, async () => {
    const body = randomBytes(24 * MiB);
    await writeFile(join(source, 'cold.bin'), body);
    await assertPagesOnEveryWorker('cold.bin', 24);
    await readConcurrently('/data/cold.bin', createHash('sha256').update(body).digest('hex'));
    assert.equal(await processState(stopped.pid!), 'T', 'the worker was stopped the whole time');
  });
});
