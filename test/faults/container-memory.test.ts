import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rssOf } from '../harness/slowclients.js';
import { WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
const PAGE = 16 * MiB;
/** The container: less than the worker's page budgets came to before (fills 96 + relays 64 + responses 128 MiB). */
const LIMIT = 256 * MiB;
const CGROUPS = '/sys/fs/cgroup/memory';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A cgroup v1 memory group of our own, or why not (no v1 hierarchy, not root). */
async function memoryGroup(): Promise<string | Error> {
  const group = join(CGROUPS, `fanout-test-${process.pid}`);
  try {
    await mkdir(group);
    await writeFile(join(group, 'memory.limit_in_bytes'), String(LIMIT));
    return group;
  } catch (err) {
    await rmdir(group).catch(() => {});
    return err as Error;
  }
}

async function oomKills(group: string): Promise<number> {
  return Number(/oom_kill (\d+)/.exec(await readFile(join(group, 'memory.oom_control'), 'utf8'))?.[1] ?? 0);
}

async function readHashed(url: string): Promise<string> {
  const res = await fetch(url);
  const hash = createHash('sha256');
  for await (const chunk of res.body!) hash.update(chunk as Uint8Array);
  return `${res.status} ${hash.digest('hex')}`;
}

describe('a worker in a memory-limited container', async () => {
  const group = await memoryGroup();
  let dir: string;
  let worker: WorkerProcess;
  const data = randomBytes(16 * PAGE);

  before(async () => {
    if (group instanceof Error) return;
    dir = await mkdtemp(join(tmpdir(), 'fanout-cgroup-'));
    await writeFile(join(dir, 'big.bin'), data);
    worker = await WorkerProcess.start({ id: 'w-cgroup', pageSize: '16MiB', mounts: { data: dir } }, undefined, { cgroup: group });
  });
  after(async () => {
    if (group instanceof Error) return;
    await worker?.destroy();
    await rm(dir, { recursive: true, force: true });
    await rmdir(group);
  });

  test('50 cold readers of a file of 16 MiB pages in a 256 MiB container: all served, no OOM kill', { skip: group instanceof Error && `no cgroup v1 memory group: ${group.message}` }, async () => {
    const g = group as string;
    // The highest RSS seen while the reads run (and the worker lives): a figure, not asserted.
    let peak = 0;
    const sampler = setInterval(() => void rssOf(worker.pid!).then((rss) => (peak = Math.max(peak, rss)), () => {}), 100);
    const results = await Promise.allSettled(Array.from({ length: 50 }, () => readHashed(`${worker.url}/v1/data/data/big.bin`)));
    clearInterval(sampler);
    const tally: Record<string, number> = {};
    for (const r of results) {
      const key = r.status === 'fulfilled' ? r.value.replace(sha256(data), 'right bytes') : String(r.reason);
      tally[key] = (tally[key] ?? 0) + 1;
    }
    console.log(`# 50 cold readers, 16 MiB pages, 256 MiB container: ${JSON.stringify(tally)}; worker peak RSS ${(peak / MiB).toFixed(0)} MiB; OOM kills ${await oomKills(g)}`);
    assert.equal(await oomKills(g), 0, 'the OOM killer ended the worker');
    assert.equal(worker.running, true);
    assert.deepEqual(tally, { '200 right bytes': 50 });
  });
});
