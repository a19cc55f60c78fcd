import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { FanoutError } from '../core/errors.js';
import type { ReleaseFetcher } from './fetch.js';
import { ReleaseDir } from './install.js';
import type { Manifest, ManifestFile } from './manifest.js';
import { manifestOf, sha } from './manifest.testkit.js';
import { stageVersion } from './stage.js';

const PAGE = 4096;
/**
 * A cluster stand-in that answers the pages of each file last page first (each page is
 * released only when every later page of its file was asked for and answered), in chunks.
 */
function reverseFetcher(files: Record<string, Buffer>, corrupt?: { path: string; index: number }) {
  const answered = new Map<string, Set<number>>();
  const waiting = new Map<string, (() => void)[]>();
  let inflight = 0;
  let peak = 0;
  const lent = new Set<Buffer>();
  const released: Buffer[] = [];
  const fetcher = {
    release(chunks: Buffer[]) {
      released.push(...chunks.filter((c) => lent.delete(c)));
    },
    async pageChunks(_m: Manifest, file: ManifestFile, index: number): Promise<Buffer[]> {
      inflight++;
      peak = Math.max(peak, inflight);
      try {
        const done = answered.get(file.path) ?? new Set<number>();
        answered.set(file.path, done);
        // Wait until every later page of this file has been answered.
        while ([...Array(file.pages.length).keys()].some((i) => i > index && !done.has(i))) {
          await new Promise<void>((r) => waiting.set(file.path, [...(waiting.get(file.path) ?? []), r]));
        }
        const data = files[file.path]!.subarray(index * PAGE, (index + 1) * PAGE);
        done.add(index);
        for (const wake of waiting.get(file.path)?.splice(0) ?? []) wake();
        if (corrupt && corrupt.path === file.path && corrupt.index === index) throw new FanoutError('HASH_MISMATCH', `page ${index} of ${file.path} is corrupt`);
        const chunks = [data.subarray(0, 1000), data.subarray(1000)];
        for (const c of chunks) lent.add(c);
        return chunks;
      } finally {
        inflight--;
      }
    },
  };
  /** Chunks handed out and not given back (their memory could not be read into again). */
  const kept = () => lent.size;
  return { fetcher: fetcher as unknown as ReleaseFetcher, peak: () => peak, kept, released: () => released.length };
}

async function tree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) out[join(entry.parentPath ?? entry.path, entry.name).slice(root.length + 1)] = sha(await readFile(join(entry.parentPath ?? entry.path, entry.name)));
  }
  return out;
}

test('staging writes the exact bytes of multi-page files whose pages arrive last first', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-'));
  try {
    const files = { 'a/big.bin': randomBytes(5 * PAGE + 17), 'a/b/two.bin': randomBytes(2 * PAGE), 'one.bin': randomBytes(100), 'empty.bin': Buffer.alloc(0) };
    const dir = new ReleaseDir(root);
    await dir.init();
    const manifest = manifestOf(files);
    const { fetcher, kept, released } = reverseFetcher(files);
    const progress = await stageVersion({ manifest, dir, fetcher, pageWindow: 8 });
    assert.equal(progress.bytesDone, progress.bytesTotal);
    assert.equal(progress.bytesFetched, progress.bytesTotal);
    const expected = Object.fromEntries(Object.entries(files).map(([p, d]) => [p, sha(d)]));
    assert.deepEqual(await tree(dir.stagingDir('v1')), expected);
    // Every page's received memory is given back once written (whole small files and page by page).
    assert.ok(released() > 0);
    assert.equal(kept(), 0);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('files larger than wholeFileBytes are written page by page, as pages arrive last first, with the same bytes', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-'));
  try {
    const files = { 'a/big.bin': randomBytes(5 * PAGE + 17), 'a/b/two.bin': randomBytes(2 * PAGE), 'one.bin': randomBytes(100), 'empty.bin': Buffer.alloc(0) };
    const dir = new ReleaseDir(root);
    await dir.init();
    const { fetcher, kept } = reverseFetcher(files);
    const progress = await stageVersion({ manifest: manifestOf(files), dir, fetcher, pageWindow: 8, wholeFileBytes: PAGE });
    assert.equal(progress.bytesDone, progress.bytesTotal);
    assert.equal(progress.bytesFetched, progress.bytesTotal);
    assert.deepEqual(await tree(dir.stagingDir('v1')), Object.fromEntries(Object.entries(files).map(([p, d]) => [p, sha(d)])));
    assert.deepEqual(await readdir(dir.partsDir('v1')).catch(() => []), [], 'no part is left');
    assert.equal(kept(), 0, 'every written page was given back');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('many small files are staged concurrently and every one is whole', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-'));
  try {
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 300; i++) files[`d${i % 7}/f${i}.bin`] = randomBytes(1 + (i * 37) % (2 * PAGE));
    const dir = new ReleaseDir(root);
    await dir.init();
    const { fetcher, peak } = reverseFetcher(files);
    await stageVersion({ manifest: manifestOf(files), dir, fetcher, fileConcurrency: 16 });
    assert.ok(peak() > 1, 'files were fetched concurrently');
    assert.deepEqual(await tree(dir.stagingDir('v1')), Object.fromEntries(Object.entries(files).map(([p, d]) => [p, sha(d)])));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a corrupt page fails staging and its file never appears under its name', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-'));
  try {
    const files = { 'big.bin': randomBytes(4 * PAGE), 'other.bin': randomBytes(10) };
    const dir = new ReleaseDir(root);
    await dir.init();
    const { fetcher } = reverseFetcher(files, { path: 'big.bin', index: 1 });
    await assert.rejects(stageVersion({ manifest: manifestOf(files), dir, fetcher, fileConcurrency: 1 }), (err: unknown) => err instanceof FanoutError && err.code === 'HASH_MISMATCH');
    assert.deepEqual(Object.keys(await tree(dir.stagingDir('v1'))), []);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a whole-file digest that disagrees with correct pages fails the file', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-'));
  try {
    const files = { 'big.bin': randomBytes(3 * PAGE) };
    const dir = new ReleaseDir(root);
    await dir.init();
    const manifest = manifestOf(files);
    manifest.files[0]!.sha256 = sha(Buffer.from('something else'));
    const { fetcher } = reverseFetcher(files);
    await assert.rejects(stageVersion({ manifest, dir, fetcher }), (err: unknown) => err instanceof FanoutError && err.code === 'HASH_MISMATCH');
    assert.deepEqual(Object.keys(await tree(dir.stagingDir('v1'))), []);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('the first failing file stops the others: the rest of the release is not fetched', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-'));
  try {
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 400; i++) files[`f${String(i).padStart(3, '0')}`] = randomBytes(100);
    const dir = new ReleaseDir(root);
    await dir.init();
    let asked = 0;
    const fetcher = {
      release() {},
      async pageChunks(_m: Manifest, file: ManifestFile): Promise<Buffer[]> {
        asked++;
        await new Promise((r) => setImmediate(r));
        if (file.path === 'f005') throw new FanoutError('DISK_FULL', 'no space left');
        return [files[file.path]!];
      },
    } as unknown as ReleaseFetcher;
    await assert.rejects(stageVersion({ manifest: manifestOf(files), dir, fetcher, fileConcurrency: 8 }), (err: unknown) => err instanceof FanoutError && err.code === 'DISK_FULL');
    assert.ok(asked < 100, `${asked} files were still fetched after the failure`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('files a crash left torn or empty in staging (no flush per file) are fetched again, intact ones kept', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-'));
  try {
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 12; i++) files[`d${i % 3}/f${i}.bin`] = randomBytes(PAGE + 100 * i);
    const dir = new ReleaseDir(root);
    await dir.init();
    // What the disk may hold after a crash: some files whole, one of the right size but zeroed
    // (written back before its data), one empty (its name durable, no data).
    const staging = dir.stagingDir('v1');
    for (const d of ['d0', 'd1', 'd2']) await mkdir(join(staging, d), { recursive: true });
    await writeFile(join(staging, 'd0/f0.bin'), files['d0/f0.bin']!);
    await writeFile(join(staging, 'd1/f1.bin'), Buffer.alloc(files['d1/f1.bin']!.length));
    await writeFile(join(staging, 'd2/f2.bin'), Buffer.alloc(0));
    const { fetcher } = reverseFetcher(files);
    const progress = await stageVersion({ manifest: manifestOf(files), dir, fetcher });
    assert.equal(progress.bytesResumed, files['d0/f0.bin']!.length, 'only the intact file is kept');
    assert.deepEqual(await tree(staging), Object.fromEntries(Object.entries(files).map(([p, d]) => [p, sha(d)])));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('small files that do not fit the disk fail staging with DISK_FULL and leave no part behind', { skip: process.getuid?.() !== 0 && 'needs root to mount a tmpfs' }, async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', root]);
  try {
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 40; i++) files[`d${i % 4}/f${i}.bin`] = randomBytes(16 * 1024);
    const dir = new ReleaseDir(root);
    await dir.init();
    const { fetcher } = reverseFetcher(files);
    await assert.rejects(stageVersion({ manifest: manifestOf(files), dir, fetcher }), (err: unknown) => err instanceof FanoutError && err.code === 'DISK_FULL');
    assert.deepEqual(await readdir(dir.partsDir('v1')).catch(() => []), [], 'every part name of a failed write is removed');
  } finally {
    execFileSync('umount', ['-l', root]);
    await rm(root, { recursive: true, force: true });
  }
});

/** Every entry of an installed tree, by lstat: nothing but regular files and real directories. */
async function onlyFilesAndDirectories(root: string): Promise<void> {
  assert.ok((await lstat(root)).isDirectory(), `${root} is a real directory`);
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath ?? entry.path, entry.name);
    assert.ok(entry.isFile() || entry.isDirectory(), `${path} is neither a regular file nor a directory`);
  }
}

test('a directory (or an extra file) left in staging where the manifest has a file is removed, and the version installs', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-'));
  try {
    const files = { 'x.txt': randomBytes(100), 'big.bin': randomBytes(3 * PAGE), 'sub/a1.bin': randomBytes(200) };
    const dir = new ReleaseDir(root);
    await dir.init();
    const staging = dir.stagingDir('v1');
    // Small (written whole) and large (page by page) files: each was renamed onto a directory (EISDIR).
    await mkdir(join(staging, 'x.txt', 'inner'), { recursive: true });
    await mkdir(join(staging, 'big.bin'), { recursive: true });
    await writeFile(join(staging, 'sub'), 'a file where a directory goes');
    await writeFile(join(staging, 'extra.bin'), 'in no manifest');
    const manifest = manifestOf(files);
    await stageVersion({ manifest, dir, fetcher: reverseFetcher(files).fetcher, wholeFileBytes: PAGE });
    await dir.install(manifest);
    await onlyFilesAndDirectories(dir.versionDir('v1'));
    assert.deepEqual(await tree(dir.versionDir('v1')), Object.fromEntries(Object.entries(files).map(([p, d]) => [p, sha(d)])));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('symlinks in staging (to a file with the right bytes, to a directory, staging itself) are removed, never written through', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stage-'));
  const outside = await mkdtemp(join(tmpdir(), 'fanout-outside-'));
  try {
    const files = { 'x.txt': randomBytes(100), 'sub/a1.bin': randomBytes(200), 'sub/a2.bin': randomBytes(3 * PAGE), 'deep/er/a3.bin': randomBytes(10) };
    const dir = new ReleaseDir(root);
    await dir.init();
    await mkdir(join(outside, 'dir'));
    await writeFile(join(outside, 'dir', 'keep.txt'), 'not ours');
    await mkdir(join(outside, 'staging'));
    await writeFile(join(outside, 'x.txt'), files['x.txt']);
    const manifest = manifestOf(files);
    const staging = dir.stagingDir('v1');
    await mkdir(join(outside, 'staging', 'deep'));
    await symlink(join(outside, 'staging'), staging);
    await symlink(join(outside, 'dir'), join(outside, 'staging', 'deep', 'er'));
    // First round: staging itself is a link to a directory outside.
    await stageVersion({ manifest, dir, fetcher: reverseFetcher(files).fetcher, wholeFileBytes: PAGE });
    assert.ok((await lstat(staging)).isDirectory());
    // Second round (a new version in the same staging): a link to a file with the right bytes, a link to a directory.
    await rm(join(staging, 'x.txt'));
    await symlink(join(outside, 'x.txt'), join(staging, 'x.txt'));
    await rm(join(staging, 'sub'), { recursive: true });
    await symlink(join(outside, 'dir'), join(staging, 'sub'));
    const progress = await stageVersion({ manifest, dir, fetcher: reverseFetcher(files).fetcher, wholeFileBytes: PAGE });
    assert.equal(progress.bytesResumed, files['deep/er/a3.bin'].length, 'only the regular file is kept');
    await dir.install(manifest);
    await onlyFilesAndDirectories(dir.versionDir('v1'));
    assert.deepEqual(await tree(dir.versionDir('v1')), Object.fromEntries(Object.entries(files).map(([p, d]) => [p, sha(d)])));
    // Nothing was written outside the release directory.
    // (withFileTypes: a plain recursive readdir descends into links to directories.)
    const listed = (await readdir(outside, { recursive: true, withFileTypes: true })).map((e) => relative(outside, join(e.parentPath ?? e.path, e.name)));
    assert.deepEqual(listed.sort(), ['dir', 'dir/keep.txt', 'staging', 'staging/deep', 'staging/deep/er', 'x.txt']);
    assert.deepEqual(await readFile(join(outside, 'x.txt')), files['x.txt']);
  } finally {
    await rm(root, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  }
});
