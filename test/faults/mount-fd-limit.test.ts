import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { forceUnmount, MountProcess, sh } from '../harness/mount.js';
import { fanoutBin, WorkerProcess } from '../harness/workers.js';
import { hasPrlimit, lowestFreeFd, setSoftNofile } from '../harness/fds.js';

/**
 * A `fanout mount` process out of file descriptors (found by a fault hunt): readers must get an
 * errno that names the cause, the mount must say so once with its limit, stay up, leak nothing
 * and read again once descriptors are free.
 */

/** `pid`'s fds: the targets of those that are not TCP sockets, and the states of those that are. */
function fdsOf(pid: number): { other: string[]; tcp: string[] } {
  const states = new Map<string, string>();
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9) states.set(cols[9]!, cols[3] === '01' ? 'ESTABLISHED' : `state ${cols[3]}`);
    }
  }
  const other: string[] = [];
  const tcp: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode && states.has(inode)) tcp.push(states.get(inode)!);
    else other.push(`${fd} ${target}`);
  }
  return { other: other.sort(), tcp };
}

describe('fanout mount out of file descriptors', { skip: !hasPrlimit() && 'needs Linux and util-linux prlimit' }, () => {
  let source: string;
  let work: string;
  let mnt: string;
  let worker: WorkerProcess;
  const files = Array.from({ length: 8 }, () => randomBytes(20_000));

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-mount-fds-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-mount-fds-'));
    mnt = join(work, 'mnt');
    await mkdir(mnt);
    await mkdir(join(source, 'sub'));
    await Promise.all(files.map((bytes, i) => writeFile(join(source, i === 5 ? 'sub/f5.bin' : `f${i}.bin`), bytes)));
    worker = await WorkerProcess.start({ id: 'mount-fds', mounts: { data: source } });
  });
  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('a read that needs a connection and finds no fd is EMFILE, told once with the limit; the mount stays up, leaks no fd and reads again once fds are free', async () => {
    const mount = await MountProcess.start(mnt, worker.url, '--ttl', '60s');
    try {
      const first = await sh('cat', [join(mnt, 'data/f0.bin')]);
      assert.equal(first.code, 0, first.stderr);
      await sh('stat', [join(mnt, 'data/f1.bin'), join(mnt, 'data/f2.bin')]); // their attributes kept: only reads need the worker
      const before = fdsOf(mount.pid);
      // The worker restarted: the mount's kept connections are closed, its next request needs a new one.
      await worker.restart();
      const limit = lowestFreeFd(mount.pid);
      setSoftNofile(mount.pid, limit); // every fd number below the limit in use: the next open fails with EMFILE
      const reads = [];
      for (const name of ['f1.bin', 'f2.bin', 'f1.bin']) reads.push(await sh('cat', [join(mnt, 'data', name)]));
      const lookup = await sh('stat', [join(mnt, 'data/sub/f5.bin')]); // names not looked up yet: stat or list requests
      setSoftNofile(mount.pid, 1024);

      // Before: "Input/output error" for each, as for a dead cluster, and two log lines per read naming no limit.
      for (const read of reads) {
        assert.notEqual(read.code, 0);
        assert.match(read.stderr, /Too many open files/, read.stderr);
      }
      assert.match(lookup.stderr, /Too many open files/, lookup.stderr);
      const told = mount.log.split('\n').filter((line) => /no file descriptor left/.test(line));
      assert.equal(told.length, 1, mount.log);
      assert.match(told[0]!, new RegExp(`open-file limit \\(ulimit -n, LimitNOFILE\\) is ${limit}\\b`));
      assert.doesNotMatch(mount.log, /failed: EIO/);

      for (const [i, name] of ['f1.bin', 'f2.bin', 'sub/f5.bin'].entries()) {
        const again = await sh('cat', [join(mnt, 'data', name)]);
        assert.equal(again.code, 0, `${name} once fds are free: ${again.stderr}`);
        assert.ok(again.stdout.equals(files[[1, 2, 5][i]!]!));
      }
      // No fd leaked: the same files and pipes as before, and every TCP socket a live connection
      // (the reads after it opened a few more for their pages: pooled, bounded). /dev/fuse clones
      // are one per FUSE thread, and libfuse starts a thread when all are busy (up to the mount's
      // 32): their number may grow with the reads, never past that.
      const now = fdsOf(mount.pid);
      const isFuse = (fd: string) => fd.endsWith(' /dev/fuse');
      assert.deepEqual(now.other.filter((fd) => !isFuse(fd)), before.other.filter((fd) => !isFuse(fd)));
      assert.ok(before.other.filter(isFuse).every((fd) => now.other.includes(fd)), JSON.stringify(now.other));
      assert.ok(now.other.filter(isFuse).length <= 32 + 1, JSON.stringify(now.other)); // a clone per thread, and the session's own
      assert.deepEqual(now.tcp.filter((state) => state !== 'ESTABLISHED'), [], JSON.stringify(now));
    } finally {
      await mount.signal('SIGTERM');
      await forceUnmount(mnt);
    }
  });

  test('started under a limit too low for its threads and connections, the mount says so', async () => {
    const mount = await MountProcess.startUnder(64, mnt, worker.url);
    try {
      // Before: nothing was said; reads failed later with EIO.
      assert.match(mount.log, /open-file limit \(ulimit -n, LimitNOFILE\) is 64, below the 122 this mount's 32 FUSE threads and connections to 1 worker\(s\) want/);
      const read = await sh('cat', [join(mnt, 'data/f3.bin')]);
      assert.equal(read.code, 0, read.stderr);
      assert.ok(read.stdout.equals(files[3]!));
    } finally {
      await mount.signal('SIGTERM');
      await forceUnmount(mnt);
    }
  });
  test('started under a limit too low to open /dev/fuse, the mount exits OVERLOADED naming its limit and how to raise it', async () => {
    // 20: past Node's start and the cluster request, short of the open of /dev/fuse (at 21 it mounts).
    // Were it to mount, the timeout ends it and the test fails on its exit code.
    const run = await new Promise<{ code: number | string | null; stderr: string }>((resolve) =>
      execFile('prlimit', ['--nofile=20:20', '--', process.execPath, fanoutBin, 'mount', mnt, '--endpoint', worker.url], { timeout: 60_000 }, (err, _stdout, stderr) =>
        resolve({ code: (err as { code?: number | string } | null)?.code ?? 0, stderr }),
      ),
    );
    try {
      // Before: "fanout: INTERNAL: cannot mount at … (libfuse printed why)", the code of a fanout bug.
      assert.equal(run.code, 1, run.stderr);
      assert.doesNotMatch(run.stderr, /INTERNAL/);
      assert.match(
        run.stderr,
        /fanout: OVERLOADED: cannot mount at \S+: this mount process has no file descriptor left \(EMFILE: its open-file limit, ulimit -n or LimitNOFILE, is 20\); raise it \(ulimit -n, or LimitNOFILE in its systemd unit\) and mount again/,
        run.stderr,
      );
    } finally {
      await forceUnmount(mnt);
    }
  });
});
