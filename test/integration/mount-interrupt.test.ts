import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../harness/cli.js';
import { MountProcess, sh, stopMountAndWorker } from '../harness/mount.js';
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
    await stopMountAndWorker(mount, worker, join(work, 'mnt'), source, work);
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

/**
 * A `stat` and an `ls` blocked on the mount, the listing they need owned by a stopped worker, get
 * Ctrl-C: the lookup and the opendir are interrupted as reads are, answered EINTR, and both
 * commands exit by the signal now. Before, they stayed in D state until the listing's deadline
 * (30 s first byte), longer than this test's timeout.
 */
describe('fanout mount, interrupted stats and listings', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  let mount: MountProcess;
  const commands: Reader[] = [];

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-intr-meta-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-intr-meta-'));
    await mkdir(join(source, 'sub'));
    await writeFile(join(source, 'sub/f.txt'), 'f\n');
    worker = await WorkerProcess.start({ id: 'intr-meta', mounts: { data: source } });
    await mkdir(join(work, 'mnt'));
    // A long TTL: the kernel keeps what `ls data` told it (`sub` is a directory), so after the
    // stop `ls data/sub` waits in opendir for sub's listing, and `stat data/sub/f.txt` in its lookup.
    mount = await MountProcess.start(join(work, 'mnt'), worker.url, '--ttl', '10m');
  });

  after(async () => {
    worker?.resume();
    for (const r of commands) r.proc.kill('SIGKILL');
    await stopMountAndWorker(mount, worker, join(work, 'mnt'), source, work);
  });

  test('Ctrl-C of `stat` and `ls` waiting for a stopped worker ends them at once; the mount answers on', { timeout: 20_000 }, async () => {
    const data = join(mount.mountpoint, 'data');
    assert.equal((await sh('ls', [data])).code, 0); // listed before the stop: `sub` is known
    worker.pause();
    const ls = reader('ls', [join(data, 'sub')]);
    const stat = reader('stat', [join(data, 'sub/f.txt')]);
    commands.push(ls, stat);
    await waitFor('ls and stat blocked on the mount', async () => (await waitingOnFuse(ls.proc.pid!)) && (await waitingOnFuse(stat.proc.pid!)));
    for (const r of [ls, stat]) r.proc.kill('SIGINT');
    assert.deepEqual(await ls.exited, { code: null, signal: 'SIGINT' });
    assert.deepEqual(await stat.exited, { code: null, signal: 'SIGINT' });

    worker.resume();
    const listed = await sh('ls', [join(data, 'sub')]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(listed.stdout.toString(), 'f.txt\n');
    assert.equal((await sh('stat', [join(data, 'sub/f.txt')])).code, 0);
    assert.doesNotMatch(mount.log, /dispatcher threw|failed: EIO/);
  });
});
