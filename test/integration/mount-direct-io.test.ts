import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../harness/cli.js';
import { forceUnmount, MountProcess, sh } from '../harness/mount.js';
import { WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** Bytes of `path` in the kernel's page cache (fincore, util-linux). */
async function cachedBytes(path: string): Promise<number> {
  const out = await sh('fincore', ['--bytes', '--noheadings', '--output', 'RES', path]);
  assert.equal(out.code, 0, out.stderr);
  return Number(out.stdout.toString().trim());
}

const MMAP_SHA256 = [
  'import hashlib, mmap, sys',
  "with open(sys.argv[1], 'rb') as f:",
  '    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)',
  '    print(hashlib.sha256(m[:]).hexdigest(), m[int(sys.argv[2]):int(sys.argv[2]) + 16].hex())',
].join('\n');

/**
 * Large files through the mount with direct I/O (the default): the bytes are exact, the kernel's
 * page cache is not filled, mmap still works (FUSE_DIRECT_IO_ALLOW_MMAP, native/fuse/init.h),
 * reads are answered by the addon's FUSE threads from offered pages; small files and
 * --no-direct-io keep the page cache.
 */
describe('fanout mount, direct I/O of large files', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  let big: Buffer;
  let small: Buffer;
  const mounts: MountProcess[] = [];

  async function mount(name: string, ...flags: string[]): Promise<MountProcess> {
    const mnt = join(work, name);
    await mkdir(mnt);
    const m = await MountProcess.start(mnt, worker.url, ...flags);
    mounts.push(m);
    return m;
  }

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-dio-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-dio-'));
    big = randomBytes(9 * MiB + 4321); // ten 1 MiB pages, the last one short
    small = randomBytes(200_000);
    await writeFile(join(source, 'big.bin'), big);
    await writeFile(join(source, 'small.bin'), small);
    worker = await WorkerProcess.start({ id: 'dio', mounts: { data: source }, pageSize: '1MiB' });
  });

  after(async () => {
    for (const m of mounts) {
      await m.signal('SIGTERM');
      await forceUnmount(m.mountpoint);
    }
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('a large file reads byte-exact without filling the page cache, mostly answered by the FUSE threads, and mmap reads the right bytes', async () => {
    const m = await mount('default');
    assert.match(m.log, /reads of up to \d+ MiB per request/);
    assert.match(m.log, /bypass the kernel page cache \(direct I\/O\)/);
    const path = join(m.mountpoint, 'data/big.bin');
    for (const bs of ['4M', '1M', '64k']) {
      const dd = await sh('dd', [`if=${path}`, `bs=${bs}`, 'status=none']);
      assert.equal(dd.code, 0, dd.stderr);
      assert.equal(sha256(dd.stdout), sha256(big), `dd bs=${bs}`);
    }
    const unaligned = await sh('dd', [`if=${path}`, 'bs=1000', 'skip=3000', 'count=2000', 'status=none']);
    assert.ok(unaligned.stdout.equals(big.subarray(3_000_000, 5_000_000)), 'an unaligned read across pages');
    assert.equal(await cachedBytes(path), 0, 'direct I/O leaves nothing in the page cache');

    const at = 7 * MiB - 5;
    const py = await sh('python3', ['-c', MMAP_SHA256, path, String(at)]);
    assert.equal(py.code, 0, py.stderr);
    assert.equal(py.stdout.toString().trim(), `${sha256(big)} ${big.subarray(at, at + 16).toString('hex')}`);

    // Eight readers at once share the offered pages; each reads the whole file.
    const readers = await Promise.all(Array.from({ length: 8 }, () => sh('dd', [`if=${path}`, 'bs=4M', 'status=none'])));
    for (const r of readers) assert.equal(sha256(r.stdout), sha256(big));

    assert.equal(await m.signal('SIGTERM'), 0);
    const stats = /"offered":(\{[^}]*\})/.exec(m.log);
    assert.ok(stats, `the mount logs its offered-page counts: ${m.log}`);
    const offered = JSON.parse(stats[1]!) as { served: number; pages: number };
    assert.ok(offered.served > 0, 'reads were answered by the FUSE threads');
    assert.equal(offered.pages, 0, 'every offer was withdrawn when the files were closed');
  });

  test('a small file (under a page) keeps the page cache', async () => {
    const m = await mount('small');
    const path = join(m.mountpoint, 'data/small.bin');
    const cat = await sh('cat', [path]);
    assert.equal(sha256(cat.stdout), sha256(small));
    assert.ok((await cachedBytes(path)) > 0, 'the small file is in the page cache');
  });

  test('--no-direct-io reads large files through the page cache', async () => {
    const m = await mount('cached', '--no-direct-io');
    assert.doesNotMatch(m.log, /direct I\/O/);
    const path = join(m.mountpoint, 'data/big.bin');
    const dd = await sh('dd', [`if=${path}`, 'bs=4M', 'status=none']);
    assert.equal(sha256(dd.stdout), sha256(big));
    assert.ok((await cachedBytes(path)) > 0, 'the page cache holds what was read');
    const py = await sh('python3', ['-c', MMAP_SHA256, path, '12345']);
    assert.equal(py.stdout.toString().trim(), `${sha256(big)} ${big.subarray(12345, 12345 + 16).toString('hex')}`);
  });
});
