import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { forceUnmount, MountProcess } from '../harness/mount.js';
import { WorkerProcess } from '../harness/workers.js';

/** More reads of the hung file system at once than the worker has pool threads (16). */
const HUNG_READS = 40;

/** A body, or the test fails: a minute is far past any answer a working worker gives here. */
async function body(url: string): Promise<{ status: number; bytes: Buffer }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
}

/**
 * A mount whose directory source is on a network file system that stops answering: a `fanout
 * mount` frozen by SIGSTOP stands for the hung NFS server (every lookup into it blocks its thread
 * until the server comes back, maybe never). Reads of it must fail by the source's deadline, and
 * the worker's other mount must go on serving, cached pages and cold ones: the hung calls may not
 * take every thread of the pool the page store and the other sources share (src/lib/ufs/fsgate.ts).
 */
describe('a hung network file system under one of two mounts', () => {
  let work: string;
  let mnt: string;
  let nfsServer: WorkerProcess;
  let share: MountProcess;
  let worker: WorkerProcess;
  const local = new Map<string, Buffer>([
    ['cached.bin', randomBytes(300_000)],
    ['cold.bin', randomBytes(300_000)],
  ]);

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'fanout-hung-source-'));
    const exported = join(work, 'exported');
    const localDir = join(work, 'local');
    mnt = join(work, 'mnt');
    await Promise.all([exported, localDir, mnt].map((dir) => mkdir(dir)));
    for (let i = 0; i <= HUNG_READS; i++) await writeFile(join(exported, `f${i}.txt`), `file ${i}`);
    for (const [name, bytes] of local) await writeFile(join(localDir, name), bytes);
    nfsServer = await WorkerProcess.start({ id: 'nfs', mounts: { share: exported } });
    share = await MountProcess.start(mnt, nfsServer.url);
    worker = await WorkerProcess.start({ id: 'w', mounts: { local: localDir, nfs: join(mnt, 'share') }, timeouts: { sourceFirstByte: '2s' } });
  });

  after(async () => {
    // SIGKILL ends a stopped process too; the kernel then fails every call still waiting in its file system.
    await share?.signal('SIGKILL');
    if (mnt) await forceUnmount(mnt);
    await worker?.destroy();
    await nfsServer?.destroy();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('its reads fail with SOURCE_ERROR by the deadline; the other mount serves cached and cold pages meanwhile', async () => {
    // While the share answers: its root resolved, and one local file cached.
    assert.equal((await body(`${worker.url}/v1/data/nfs/f0.txt`)).bytes.toString(), 'file 0');
    assert.deepEqual((await body(`${worker.url}/v1/data/local/cached.bin`)).bytes, local.get('cached.bin'));

    share.pause();
    const hung = await Promise.all(Array.from({ length: HUNG_READS }, (_, i) => body(`${worker.url}/v1/data/nfs/f${i + 1}.txt`)));
    for (const answer of hung) {
      assert.equal(answer.status, 502);
      assert.equal(JSON.parse(answer.bytes.toString()).error.code, 'SOURCE_ERROR');
    }

    // The hung calls still hold their threads (nothing cancels them); the rest of the worker goes on.
    for (const name of ['cached.bin', 'cold.bin']) {
      const answer = await body(`${worker.url}/v1/data/local/${name}`);
      assert.equal(answer.status, 200, `${name}: ${answer.bytes.subarray(0, 300).toString()}`);
      assert.deepEqual(answer.bytes, local.get(name));
    }
    assert.equal((await fetch(`${worker.url}/healthz`, { signal: AbortSignal.timeout(60_000) })).status, 200);
  });
});
