import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { rssOf } from '../harness/slowclients.js';
import { MountProcess, stopMountAndWorker } from '../harness/mount.js';
import { WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
const PAGE = 16 * MiB;
/** The container: less than the worker's page budgets came to before (fills 96 + relays 64 + responses 128 MiB). */
const LIMIT = 256 * MiB;
const CGROUPS = '/sys/fs/cgroup/memory';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A cgroup v1 memory group of our own, or why not (no v1 hierarchy, not root). */
async function memoryGroup(name: string, limit: number): Promise<string | Error> {
  const group = join(CGROUPS, `fanout-test-${name}-${process.pid}`);
  try {
    await mkdir(group);
    await writeFile(join(group, 'memory.limit_in_bytes'), String(limit));
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
  const group = await memoryGroup('worker', LIMIT);
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

describe('a FUSE mount in a memory-limited container', async () => {
  // The mount's allowances came to 576 MiB (first pages 64, read-ahead 256, reads 256).
  const group = await memoryGroup('mount', 320 * MiB);
  let dir: string;
  let worker: WorkerProcess;
  let mount: MountProcess | undefined;
  const hashes: string[] = [];

  before(async () => {
    if (group instanceof Error) return;
    dir = await mkdtemp(join(tmpdir(), 'fanout-cgroup-mount-'));
    await mkdir(join(dir, 'src'));
    await mkdir(join(dir, 'mnt'));
    for (let i = 0; i < 64; i++) {
      const data = randomBytes(16 * MiB);
      hashes.push(sha256(data));
      await writeFile(join(dir, 'src', `f${i}.bin`), data);
    }
    worker = await WorkerProcess.start({ id: 'w-cgroup-mount', pageSize: '16MiB', mounts: { data: join(dir, 'src') } });
    mount = await MountProcess.startInCgroup(group, join(dir, 'mnt'), worker.url, '--log-level', 'warn');
  });
  after(async () => {
    if (group instanceof Error) return;
    await stopMountAndWorker(mount, worker, join(dir, 'mnt'), dir);
    await rmdir(group);
  });

  test('64 processes each reading its own 16 MiB file (16 MiB pages) in a 320 MiB container: all read right, no OOM kill', { skip: group instanceof Error && `no cgroup v1 memory group: ${group.message}` }, async () => {
    const g = group as string;
    let peak = 0;
    const sampler = setInterval(() => void rssOf(mount!.pid).then((rss) => (peak = Math.max(peak, rss)), () => {}), 100);
    const results = await Promise.all(
      hashes.map(
        (want, i) =>
          new Promise<string>((resolve) =>
            execFile('sha256sum', [join(dir, 'mnt', 'data', `f${i}.bin`)], (err, out) => resolve(err ? (err.message.split('\n')[1] ?? err.message).replace(/^.*: /, '') : out.startsWith(want) ? 'right bytes' : 'wrong bytes')),
          ),
      ),
    );
    clearInterval(sampler);
    const tally: Record<string, number> = {};
    for (const r of results) tally[r] = (tally[r] ?? 0) + 1;
    console.log(`# 64 readers through the mount, 16 MiB pages, 320 MiB container: ${JSON.stringify(tally)}; mount peak RSS ${(peak / MiB).toFixed(0)} MiB; OOM kills ${await oomKills(g)}`);
    assert.equal(await oomKills(g), 0, 'the OOM killer ended the mount');
    assert.equal(mount!.running, true);
    assert.deepEqual(tally, { 'right bytes': 64 });
  });
});
