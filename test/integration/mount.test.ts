import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../harness/cli.js';
import { forceUnmount, isMounted, MountProcess, sh } from '../harness/mount.js';
import { fanoutBin, WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';

const MiB = 1024 * 1024;

/**
 * `fanout mount` through the real CLI, checked with the commands people use on files:
 * sha256sum, cp, dd, find, ls -l, Python's mmap, eight readers at once, and the errors a
 * read-only, networked filesystem must give.
 */
describe('fanout mount (FUSE)', () => {
  let source: string;
  let work: string;
  let mnt: string;
  let worker: WorkerProcess;
  let mount: MountProcess;
  let big: Buffer;
  const file = () => join(mnt, 'data/models/big.bin');

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-mount-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-mount-'));
    mnt = join(work, 'mnt');
    await mkdir(mnt);
    big = randomBytes(5 * MiB + 12345); // six 1 MiB pages, the last one short
    await mkdir(join(source, 'models'), { recursive: true });
    await writeFile(join(source, 'models/big.bin'), big);
    await writeFile(join(source, 'hello.txt'), 'hello fanout\n');
    await writeFile(join(source, 'empty.bin'), '');
    await writeFile(join(source, 'cold.bin'), randomBytes(100_000));
    worker = await WorkerProcess.start({ id: 'fuse', mounts: { data: source }, pageSize: '1MiB' });
    mount = await MountProcess.start(mnt, worker.url, '--ttl', '200ms');
  });

  after(async () => {
    await mount?.signal('SIGTERM');
    await forceUnmount(mnt);
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('the root lists the mounts, like fanout ls /', async () => {
    const ls = await sh('ls', ['-1', mnt]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.equal(ls.stdout.toString(), 'data\n');
  });

  test('ls -l shows sizes and read-only modes', async () => {
    const ls = await sh('ls', ['-ln', join(mnt, 'data')]);
    assert.equal(ls.code, 0, ls.stderr);
    const rows = Object.fromEntries(
      ls.stdout
        .toString()
        .split('\n')
        .filter((l) => /^[-d]/.test(l))
        .map((l) => l.split(/\s+/))
        .map((f) => [f[8], { mode: f[0], size: Number(f[4]) }]),
    );
    assert.deepEqual(rows['hello.txt'], { mode: '-r--r--r--', size: 13 });
    assert.deepEqual(rows['empty.bin'], { mode: '-r--r--r--', size: 0 });
    assert.equal(rows['models']?.mode, 'dr-xr-xr-x');
    const st = await stat(file());
    assert.equal(st.size, big.length);
    assert.equal(st.mode & 0o777, 0o444);
  });

  test('sha256sum of a multi-page file equals the source', async () => {
    const sum = await sh('sha256sum', [file()]);
    assert.equal(sum.code, 0, sum.stderr);
    assert.equal(sum.stdout.toString().split(' ')[0], sha256(big));
  });

  test('cp copies the exact bytes; empty and small files too', async () => {
    const dest = join(work, 'copy.bin');
    const cp = await sh('cp', [file(), dest]);
    assert.equal(cp.code, 0, cp.stderr);
    assert.equal(sha256(await readFile(dest)), sha256(big));
    assert.equal((await sh('cat', [join(mnt, 'data/hello.txt')])).stdout.toString(), 'hello fanout\n');
    assert.equal((await sh('cat', [join(mnt, 'data/empty.bin')])).stdout.length, 0);
  });

  test('dd with 4 MiB blocks, from the start and from an unaligned offset', async () => {
    const dd = await sh('dd', [`if=${file()}`, 'bs=4M', 'status=none']);
    assert.equal(dd.code, 0, dd.stderr);
    assert.equal(sha256(dd.stdout), sha256(big));
    const skip = await sh('dd', [`if=${file()}`, 'bs=1000', 'skip=3001', 'count=1500', 'status=none']);
    assert.equal(skip.code, 0, skip.stderr);
    assert.equal(sha256(skip.stdout), sha256(big.subarray(3_001_000, 4_501_000)));
  });

  test('find walks the tree', async () => {
    const found = await sh('find', [mnt, '-type', 'f']);
    assert.equal(found.code, 0, found.stderr);
    const files = found.stdout.toString().trim().split('\n').map((p) => p.slice(mnt.length)).sort();
    assert.deepEqual(files, ['/data/cold.bin', '/data/empty.bin', '/data/hello.txt', '/data/models/big.bin']);
  });

  test('Python reads the file through mmap', async () => {
    const script = [
      'import hashlib, mmap, sys',
      'with open(sys.argv[1], "rb") as f:',
      '    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)',
      '    tail = m[len(m) - 100:]',
      '    print(hashlib.sha256(m).hexdigest(), len(m), tail.hex())',
    ].join('\n');
    const py = await sh('python3', ['-c', script, file()]);
    assert.equal(py.code, 0, py.stderr);
    assert.equal(py.stdout.toString().trim(), `${sha256(big)} ${big.length} ${big.subarray(big.length - 100).toString('hex')}`);
  });

  test('eight concurrent readers of one file all read it correctly', async () => {
    // Drop the kernel's cached pages first, so the eight reads really go through the mount.
    await sh('dd', [`if=${file()}`, 'iflag=nocache', 'count=0', 'status=none']);
    const sums = await Promise.all(Array.from({ length: 8 }, () => sh('sha256sum', [file()])));
    for (const sum of sums) {
      assert.equal(sum.code, 0, sum.stderr);
      assert.equal(sum.stdout.toString().split(' ')[0], sha256(big));
    }
  });

  test('eight readers of eight different files each read their own bytes (page memory reused between them)', async () => {
    await mkdir(join(source, 'many'));
    const files = Array.from({ length: 8 }, () => randomBytes(6 * MiB + 777));
    for (const [i, bytes] of files.entries()) await writeFile(join(source, `many/f${i}.bin`), bytes);
    for (let i = 0; i < 100 && (await readdir(join(mnt, 'data/many')).catch(() => [])).length < 8; i++) await new Promise((r) => setTimeout(r, 50));
    for (let round = 0; round < 2; round++) {
      const sums = await Promise.all(files.map((_, i) => sh('sh', ['-c', `dd if=${join(mnt, `data/many/f${i}.bin`)} iflag=nocache count=0 status=none; sha256sum ${join(mnt, `data/many/f${i}.bin`)}`])));
      for (const [i, sum] of sums.entries()) {
        assert.equal(sum.code, 0, sum.stderr);
        assert.equal(sum.stdout.toString().split(' ')[0], sha256(files[i]!), `f${i}.bin, round ${round}`);
      }
    }
    await rm(join(source, 'many'), { recursive: true });
  });

  test('a file replaced at the source: a reader of the old version never gets bytes of the new one, a new open reads the new one', async () => {
    const v1 = randomBytes(900_000); // under a page: read through the kernel's page cache, not direct I/O
    const v2 = randomBytes(900_000);
    await writeFile(join(source, 'replaced.bin'), v1);
    const path = join(mnt, 'data/replaced.bin');
    // Listings and stats are reused for the mount's and the worker's TTLs: the new name shows after them.
    await waitFor('the new file through the mount', async () => (await readFile(path)).equals(v1));
    const old = await open(path, 'r');
    try {
      const head = Buffer.alloc(300_000);
      await old.read(head, 0, head.length, 0);
      assert.ok(head.equals(v1.subarray(0, 300_000)));
      await writeFile(join(source, 'replaced.tmp'), v2);
      await rename(join(source, 'replaced.tmp'), join(source, 'replaced.bin'));
      await waitFor('a new open to read the new version', async () => (await readFile(path)).equals(v2));
      // The old open reads on: the rest of the old version, or an error, never the new bytes
      // (one inode for both versions shared the kernel's page cache: the new reader's pages were served to it).
      const rest = Buffer.alloc(v1.length - 300_000);
      const got = await old.read(rest, 0, rest.length, 300_000).then(
        ({ bytesRead }) => rest.subarray(0, bytesRead),
        (err: NodeJS.ErrnoException) => err.code ?? String(err),
      );
      if (typeof got === 'string') assert.equal(got, 'EIO');
      else assert.ok(got.equals(v1.subarray(300_000, 300_000 + got.length)) && got.length > 0, 'the old open reads the old version');
    } finally {
      await old.close();
    }
  });

  test('missing paths are ENOENT; writes are EROFS', async () => {
    const missing = await sh('cat', [join(mnt, 'data/no-such-file')]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /No such file or directory/);
    assert.match((await sh('ls', [join(mnt, 'nomount/x')])).stderr, /No such file or directory/);
    assert.match((await sh('touch', [join(mnt, 'data/hello.txt')])).stderr, /Read-only file system/);
    assert.match((await sh('touch', [join(mnt, 'data/new.txt')])).stderr, /Read-only file system/);
    assert.match((await sh('mkdir', [join(mnt, 'data/newdir')])).stderr, /Read-only file system/);
    assert.match((await sh('sh', ['-c', `echo x >> ${join(mnt, 'data/hello.txt')}`])).stderr, /Read-only file system/);
    assert.match((await sh('rm', ['-f', join(mnt, 'data/hello.txt')])).stderr, /Read-only file system/);
    assert.equal((await readFile(join(source, 'hello.txt'))).toString(), 'hello fanout\n');
  });

  test('a dead cluster is EIO, with a log line saying why; reads resume when it is back', async () => {
    await worker.stop();
    try {
      const read = await sh('cat', [join(mnt, 'data/cold.bin')]);
      assert.notEqual(read.code, 0);
      assert.match(read.stderr, /Input\/output error/);
      assert.match(mount.log, /failed: EIO/);
      assert.match(mount.log, /WORKER_UNAVAILABLE|cannot reach/);
    } finally {
      await worker.launch();
    }
    const again = await sh('sha256sum', [join(mnt, 'data/cold.bin')]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.toString().split(' ')[0], sha256(await readFile(join(source, 'cold.bin'))));
  });

  test('reading the files of a directory in order fetches the next files ahead, and every file reads whole', async () => {
    await mkdir(join(source, 'shards'));
    for (let i = 0; i < 40; i++) await writeFile(join(source, `shards/s${String(i).padStart(2, '0')}.seg`), randomBytes(1000 + i));
    const misses = async () => (await worker.metrics()).fanout_page_misses_total ?? 0;
    const before = await misses();
    // The new directory shows once the listings cached by the worker and the mount expire.
    let names: string[] = [];
    for (let i = 0; i < 200 && names.length === 0; i++) {
      names = await readdir(join(mnt, 'data/shards')).catch(() => []);
      if (names.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    names.sort();
    assert.equal(names.length, 40);
    for (const name of names.slice(0, 2)) assert.deepEqual(await readFile(join(mnt, 'data/shards', name)), await readFile(join(source, 'shards', name)));
    // Two files opened in listing order: the worker is asked for the first pages of the next ones.
    const deadline = Date.now() + 10_000;
    while ((await misses()) - before < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok((await misses()) - before >= 20, `only ${(await misses()) - before} pages were fetched`);
    for (const name of names) assert.deepEqual(await readFile(join(mnt, 'data/shards', name)), await readFile(join(source, 'shards', name)), name);
    await rm(join(source, 'shards'), { recursive: true });
  });

  test('after a crash (SIGKILL) the stale mount is detected and mounting again works', async () => {
    assert.equal(await mount.signal('SIGKILL'), null);
    const stale = await readdir(mnt).then(
      () => 'ok',
      (err: NodeJS.ErrnoException) => err.code ?? String(err),
    );
    assert.equal(stale, 'ENOTCONN', 'Transport endpoint is not connected');
    mount = await MountProcess.start(mnt, worker.url, '--ttl', '200ms');
    assert.match(mount.log, /stale mount/);
    const sum = await sh('sha256sum', [file()]);
    assert.equal(sum.stdout.toString().split(' ')[0], sha256(big));
  });

  test('a second mount on a live mount is refused, through a link to it too', async () => {
    const second = await sh(process.execPath, [fanoutBin, 'mount', mnt, '--endpoint', worker.url]);
    assert.notEqual(second.code, 0);
    assert.match(second.stderr, /already mounted/);
    const link = `${mnt}-link`;
    await symlink(mnt, link);
    try {
      const throughLink = await sh(process.execPath, [fanoutBin, 'mount', link, '--endpoint', worker.url]);
      assert.notEqual(throughLink.code, 0, 'not stacked on the live mount');
      assert.match(throughLink.stderr, /already mounted/);
    } finally {
      await rm(link, { force: true });
    }
  });

  test('a mount on a directory whose fanout mount is alive but stopped is refused within seconds, saying how to detach it', async () => {
    mount.pause();
    try {
      const second = await sh(process.execPath, [fanoutBin, 'mount', mnt, '--endpoint', worker.url]);
      assert.notEqual(second.code, 0);
      assert.match(second.stderr, /does not answer within 5 s: a mount there is hung .*fusermount3 -u -z/);
    } finally {
      mount.resume();
    }
  });

  test('SIGTERM unmounts cleanly and exits 0', async () => {
    assert.equal(await mount.signal('SIGTERM'), 0);
    assert.equal(await isMounted(mnt), false);
    assert.match(mount.log, /SIGTERM, unmounting/);
  });
});
