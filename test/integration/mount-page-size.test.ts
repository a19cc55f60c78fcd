import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../harness/cli.js';
import { forceUnmount, MountProcess, sh } from '../harness/mount.js';
import { WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** Restarts `worker` on its port and data with another pageSize. */
async function restartWithPageSize(worker: WorkerProcess, pageSize: string): Promise<void> {
  await worker.stop();
  const file = join(worker.dir, 'worker.yaml');
  const config = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  await writeFile(file, JSON.stringify({ ...config, pageSize }, null, 2));
  await worker.launch();
}

/**
 * The cluster's workers restart with another pageSize (1 MiB → 2 MiB) under a running mount.
 * The mount counts every page it knows in the page size it started with, so it cannot follow:
 * pages it holds are still served (right bytes: pages are keyed by file version), pages it lacks
 * are refused by the workers (PAGE_SIZE_MISMATCH), never read in the wrong size, and the log
 * says the cluster's pageSize changed and to remount. Before, the log said "every worker of a
 * cluster needs the same pageSize", as for a mixed cluster, and nothing about remounting.
 */
describe('fanout mount, the cluster changes its page size', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  let mount: MountProcess;
  const big = randomBytes(5 * MiB + 4321);
  const small = randomBytes(300_000);

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-ps-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-ps-'));
    await writeFile(join(source, 'big.bin'), big);
    await writeFile(join(source, 'small.bin'), small);
    worker = await WorkerProcess.start({ id: 'ps', mounts: { data: source }, pageSize: '1MiB' });
    await mkdir(join(work, 'mnt'));
    mount = await MountProcess.start(join(work, 'mnt'), worker.url, '--ttl', '200ms');
  });

  after(async () => {
    await mount?.signal('SIGTERM');
    await forceUnmount(join(work, 'mnt'));
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('reads never get bytes of the wrong page size; pages the mount lacks fail with a log line saying to remount; a remount reads all', { timeout: 120_000 }, async () => {
    const bigPath = join(mount.mountpoint, 'data/big.bin');
    const smallPath = join(mount.mountpoint, 'data/small.bin');
    const first = await sh('cat', [bigPath]);
    assert.equal(sha256(first.stdout), sha256(big));
    await restartWithPageSize(worker, '2MiB');

    const again = await sh('cat', [bigPath]);
    // Whole and right (its pages were still held), or failed: what came out is the file's start.
    assert.ok(again.stdout.equals(big.subarray(0, again.stdout.length)), 'no wrong bytes');
    if (again.code === 0) assert.equal(again.stdout.length, big.length);
    const unread = await sh('cat', [smallPath]);
    assert.notEqual(unread.code, 0, 'a file none of whose pages the mount holds cannot be read');
    assert.match(unread.stderr.toString(), /Input\/output error/);
    assert.equal(unread.stdout.length, 0);
    assert.match(mount.log, /"code":"PAGE_SIZE_MISMATCH".*pageSize is now 2097152 bytes, this mount counts pages of 1048576.*remount it/);

    await mount.signal('SIGTERM');
    await forceUnmount(mount.mountpoint);
    mount = await MountProcess.start(mount.mountpoint, worker.url, '--ttl', '200ms');
    for (const [path, data] of [[bigPath, big], [smallPath, small]] as const) {
      const read = await sh('cat', [path]);
      assert.equal(read.code, 0, read.stderr.toString());
      assert.equal(sha256(read.stdout), sha256(data), `${path} after the remount`);
    }
  });
});
