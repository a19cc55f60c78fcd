import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../harness/cli.js';
import { forceUnmount, MountProcess, sh } from '../harness/mount.js';
import { waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** Reads 1 MiB at argv[2] MiB; a SIGINT shows as KeyboardInterrupt on stderr (Python's handler: a catchable signal). */
const READ_AT = ['import sys', "with open(sys.argv[1], 'rb') as f:", '    f.seek(int(sys.argv[2]) << 20)', '    sys.stdout.write(str(len(f.read(1 << 20))))'].join('\n');

interface Reader {
  proc: ChildProcess;
  stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function reader(cmd: string, args: string[]): Reader {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const r: Reader = { proc, stderr: '', exited: new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal }))) };
  proc.stderr!.on('data', (chunk: Buffer) => (r.stderr += chunk.toString()));
  return r;
}

/** The process waits in the kernel for a FUSE answer (its read is with the mount). */
async function waitingOnFuse(pid: number): Promise<boolean> {
  const stack = await readFile(`/proc/${pid}/stack`, 'utf8').catch(() => '');
  return stack.includes('request_wait_answer');
}

/**
 * A reader blocked in read(2) on the mount, its page owned by a stopped worker, gets Ctrl-C
 * (SIGINT): the kernel sends FUSE_INTERRUPT, the mount answers the read EINTR, and the reader
 * exits now. Before, the kernel waited for the read's answer uninterruptibly (even SIGKILL did
 * not help: `cat` stayed in D state) until the page's deadline passed, 27–57 s here. The test's
 * timeout is below that deadline (30 s first byte).
 */
describe('fanout mount, interrupted reads', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  let mount: MountProcess;
  let big: Buffer;
  const readers: Reader[] = [];

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-intr-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-intr-'));
    big = randomBytes(6 * MiB);
    await writeFile(join(source, 'big.bin'), big);
    worker = await WorkerProcess.start({ id: 'intr', mounts: { data: source }, pageSize: '1MiB' });
    await mkdir(join(work, 'mnt'));
    // A long TTL: opens after the worker stopped are answered from the stat the mount has. One
    // page of read memory: the second read of a page not in memory waits for room.
    mount = await MountProcess.start(join(work, 'mnt'), worker.url, '--ttl', '10m', '--read-memory', '1MiB');
  });

  after(async () => {
    worker?.resume();
    for (const r of readers) r.proc.kill('SIGKILL');
    await mount?.signal('SIGTERM');
    await forceUnmount(join(work, 'mnt'));
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('Ctrl-C of readers waiting for pages of a stopped worker (or for read memory) ends them at once; the mount reads on', { timeout: 20_000 }, async () => {
    const path = join(mount.mountpoint, 'data/big.bin');
    assert.equal((await sh('stat', [path])).code, 0); // looked up and stat-ed before the stop
    worker.pause();
    // cat: SIGINT's default action (a fatal signal). Python: a handler (catchable), whose read must return.
    const cat = reader('cat', [path]);
    const waitingForPage = reader('python3', ['-c', READ_AT, path, '3']);
    readers.push(cat, waitingForPage);
    await waitFor('cat and the first reader blocked in read(2) on the mount', async () => (await waitingOnFuse(cat.proc.pid!)) && (await waitingOnFuse(waitingForPage.proc.pid!)));
    const waitingForRoom = reader('python3', ['-c', READ_AT, path, '4']);
    readers.push(waitingForRoom);
    await waitFor('the second reader blocked in read(2) on the mount', () => waitingOnFuse(waitingForRoom.proc.pid!));

    for (const r of [cat, waitingForPage, waitingForRoom]) r.proc.kill('SIGINT');
    assert.deepEqual(await cat.exited, { code: null, signal: 'SIGINT' });
    for (const r of [waitingForPage, waitingForRoom]) {
      const end = await r.exited;
      assert.notEqual(end.code, 0);
      assert.match(r.stderr, /KeyboardInterrupt/, 'the read ended by the signal, not by an I/O error');
    }

    worker.resume();
    const whole = await sh('cat', [path]);
    assert.equal(whole.code, 0, whole.stderr);
    assert.equal(sha256(whole.stdout), sha256(big), 'the mount reads the file whole once the worker is back');
    assert.match(mount.log, /fanout: mounted/);
    assert.doesNotMatch(mount.log, /dispatcher threw|read \/data\/big\.bin failed/);
  });
});
