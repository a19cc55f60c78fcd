import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutError } from '../core/errors.js';
import type { ReleaseFetcher } from './fetch.js';
import type { FileSystemClock } from './fsclock.js';
import { StandingClock, StoppedClock } from './fsclock.testkit.js';
import { ReleaseDir } from './install.js';
import type { Manifest, ManifestFile } from './manifest.js';
import { manifestOf, sha } from './manifest.testkit.js';
import { stageVersion, type StageProgress } from './stage.js';

const PAGE = 4096;
/**
 * A cluster stand-in that counts the pages asked for per file. With `fullAt`, that file's fetch
 * fails with DISK_FULL once every other file is in staging: a run interrupted with all the rest
 * staged, whatever order the files moved in.
 */
function fetcherOf(files: Record<string, Buffer>, fullAt?: { path: string; staging: string; clock?: FileSystemClock }) {
  const asked = new Map<string, number>();
  const fetcher = {
    release() {},
    async pageChunks(_m: Manifest, file: ManifestFile, index: number): Promise<Buffer[]> {
      asked.set(file.path, (asked.get(file.path) ?? 0) + 1);
      if (file.path === fullAt?.path) {
        const others = Object.keys(files).filter((p) => p !== file.path);
        while (!others.every((p) => existsSync(join(fullAt.staging, p)))) await new Promise((r) => setImmediate(r));
        // The run ends once the file system's clock moved past the others' renames: their stamps
        // are not racy (the test of racy ones stops the clock instead).
        await fullAt.clock?.pastNow();
        throw new FanoutError('DISK_FULL', 'no space left');
      }
      return [files[file.path]!.subarray(index * PAGE, (index + 1) * PAGE)];
    },
  };
  return { fetcher: fetcher as unknown as ReleaseFetcher, asked };
}

async function tree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath ?? entry.path, entry.name);
    if (entry.isFile()) out[path.slice(root.length + 1)] = sha(await readFile(path));
  }
  return out;
}

const shasOf = (files: Record<string, Buffer>) => Object.fromEntries(Object.entries(files).map(([p, d]) => [p, sha(d)]));

/**
 * A release dir with v0 installed (its file is hard-linked into v1's staging) and v1's staging
 * interrupted by DISK_FULL at `zz-full.bin`, every other file of v1 staged: a small file written
 * whole, one page by page, one linked from v0.
 */
async function interruptedStaging(root: string, bootId: string | null, clock?: FileSystemClock, fileConcurrency?: number) {
  const shared = randomBytes(2 * PAGE + 9);
  const dir = new ReleaseDir(root);
  await dir.init();
  const v0 = manifestOf({ 'shared.bin': shared }, 'v0');
  await stageVersion({ manifest: v0, dir, fetcher: fetcherOf({ 'shared.bin': shared }).fetcher, bootId });
  await dir.install(v0);
  const files = {
    'linked.bin': shared,
    'big/pages.bin': randomBytes(3 * PAGE + 17),
    'small/whole.bin': randomBytes(PAGE - 1),
    'small/tiny.txt': randomBytes(100),
    'zz-full.bin': randomBytes(200),
  };
  const manifest = manifestOf(files, 'v1');
  const staging = dir.stagingDir('v1');
  if (clock) dir.clock = clock;
  let last: StageProgress | undefined;
  await assert.rejects(
    stageVersion({ manifest, dir, fetcher: fetcherOf(files, { path: 'zz-full.bin', staging, clock: dir.clock }).fetcher, wholeFileBytes: PAGE, fileConcurrency, bootId, onProgress: (p) => (last = p) }),
    (err: unknown) => err instanceof FanoutError && err.code === 'DISK_FULL',
  );
  assert.equal(last?.bytesLocal, shared.length, 'one file was linked from v0');
  const stagedBytes = Object.entries(files).reduce((sum, [path, data]) => sum + (path === 'zz-full.bin' ? 0 : data.length), 0);
  return { dir, files, manifest, staging, stagedBytes };
}

async function inTempDir(body: (root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'fanout-stagestamps-'));
  try {
    await body(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

test('a staging resumed in the same boot does not read again the files the interrupted run verified', () =>
  inTempDir(async (root) => {
    const { dir, files, manifest, stagedBytes } = await interruptedStaging(root, 'boot-a');
    const { fetcher, asked } = fetcherOf(files);
    const progress = await stageVersion({ manifest, dir, fetcher, wholeFileBytes: PAGE, bootId: 'boot-a' });
    assert.equal(progress.bytesResumed, stagedBytes, 'every file staged before the failure is kept');
    assert.equal(progress.bytesRehashed, 0, 'and none of them is read again');
    assert.deepEqual([...asked.keys()], ['zz-full.bin'], 'only the missing file is fetched');
    await dir.install(manifest);
    assert.deepEqual(await tree(dir.versionDir('v1')), shasOf(files));
    assert.equal(existsSync(dir.stagedStampFile('v1')), false, 'the staged stamps go with the install');
  }));

test('a staged file edited in place, replaced or truncated after it was stamped is hashed, fetched again, and the version installs whole', () =>
  inTempDir(async (root) => {
    const { dir, files, manifest, staging } = await interruptedStaging(root, 'boot-a');
    // Where ctimes are the kernel's coarse clock (no multigrain timestamps: older kernels, or
    // other file systems), a change in the very tick of the stamp could keep it (a limit the
    // installed versions' stamps share). The edits come a few ticks later.
    await new Promise((r) => setTimeout(r, 30));
    const handle = await open(join(staging, 'small/whole.bin'), 'r+');
    await handle.write(Buffer.from('same size, other bytes'), 0, undefined, 10);
    await handle.close();
    await rm(join(staging, 'big/pages.bin'));
    await writeFile(join(staging, 'big/pages.bin'), Buffer.alloc(files['big/pages.bin'].length, 7));
    await truncate(join(staging, 'small/tiny.txt'), 50);
    const { fetcher, asked } = fetcherOf(files);
    const progress = await stageVersion({ manifest, dir, fetcher, wholeFileBytes: PAGE, bootId: 'boot-a' });
    // The truncated file fails on its size, before any byte is read.
    assert.equal(progress.bytesRehashed, files['small/whole.bin'].length + files['big/pages.bin'].length, 'the changed files of the same size are hashed again');
    assert.deepEqual([...asked.keys()].sort(), ['big/pages.bin', 'small/tiny.txt', 'small/whole.bin', 'zz-full.bin']);
    assert.equal(progress.bytesResumed, files['linked.bin'].length, 'only the untouched file is kept');
    await dir.install(manifest);
    assert.deepEqual(await tree(dir.versionDir('v1')), shasOf(files));
  }));

/**
 * Edits a staged file in place, keeping its size, and leaves what a write in its stamp's clock
 * tick leaves: its stamp, if the interrupted run saved one, is what the file shows now.
 */
async function editInTheStampsTick(dir: ReleaseDir, staging: string, path: string): Promise<void> {
  const handle = await open(join(staging, path), 'r+');
  await handle.write(Buffer.from('same size, other bytes'), 0, undefined, 10);
  await handle.close();
  const saved = JSON.parse(await readFile(dir.stagedStampFile('v1'), 'utf8').catch(() => '{"files":{}}')) as { files: Record<string, Record<string, unknown>> };
  if (saved.files[path]) {
    const st = lstatSync(join(staging, path), { bigint: true });
    Object.assign(saved.files[path], { ino: Number(st.ino), size: Number(st.size), ctimeNs: String(st.ctimeNs) });
    await writeFile(dir.stagedStampFile('v1'), JSON.stringify(saved));
  }
}

test('a staged file edited in place in the clock tick of its stamp is hashed again by the resumed run, and fetched again', () =>
  inTempDir(async (root) => {
    // The interrupted run ends in the tick of its last renames: every stamp is racy.
    const { dir, files, manifest, staging } = await interruptedStaging(root, 'boot-a', new StoppedClock());
    await editInTheStampsTick(dir, staging, 'small/whole.bin');
    const { fetcher, asked } = fetcherOf(files);
    await stageVersion({ manifest, dir, fetcher, wholeFileBytes: PAGE, bootId: 'boot-a' });
    assert.ok(asked.has('small/whole.bin'), 'the edited file is fetched again');
    await dir.install(manifest);
    assert.deepEqual(await tree(dir.versionDir('v1')), shasOf(files));
  }));

test('a staged file written in the clock tick of its own rename is hashed again by the resumed run, though the run ended ticks later', () =>
  inTempDir(async (root) => {
    // The clock stands in each file's rename tick while the run stages, and has moved on (the
    // fetcher waits for it) before the run fails and saves its stamps. One file at a time of
    // each kind: every small file, small/whole.bin among them, is renamed and stamped before
    // zz-full.bin (the last small file) is fetched.
    const { dir, files, manifest, staging } = await interruptedStaging(root, 'boot-a', new StandingClock(), 1);
    await editInTheStampsTick(dir, staging, 'small/whole.bin');
    const { fetcher, asked } = fetcherOf(files);
    await stageVersion({ manifest, dir, fetcher, wholeFileBytes: PAGE, bootId: 'boot-a' });
    assert.ok(asked.has('small/whole.bin'), 'the file written in its rename tick is fetched again');
    await dir.install(manifest);
    assert.deepEqual(await tree(dir.versionDir('v1')), shasOf(files));
  }));

test('staged stamps written by an older build (no format) are not trusted: the staged files are hashed once, a write they hid is found', () =>
  inTempDir(async (root) => {
    const { dir, files, manifest, staging, stagedBytes } = await interruptedStaging(root, 'boot-a');
    const handle = await open(join(staging, 'small/whole.bin'), 'r+');
    await handle.write(Buffer.from('same size, other bytes'), 0, undefined, 10);
    await handle.close();
    // What an older build left: no format, and a stamp of the file taken after that write.
    const saved = JSON.parse(await readFile(dir.stagedStampFile('v1'), 'utf8')) as { format?: number; files: Record<string, Record<string, unknown>> };
    delete saved.format;
    const st = lstatSync(join(staging, 'small/whole.bin'), { bigint: true });
    saved.files['small/whole.bin'] = { ...saved.files['small/whole.bin'], ino: Number(st.ino), size: Number(st.size), ctimeNs: String(st.ctimeNs) };
    await writeFile(dir.stagedStampFile('v1'), JSON.stringify(saved));
    const { fetcher, asked } = fetcherOf(files);
    const progress = await stageVersion({ manifest, dir, fetcher, wholeFileBytes: PAGE, bootId: 'boot-a' });
    assert.ok(asked.has('small/whole.bin'), 'the edited file is fetched again');
    assert.equal(progress.bytesRehashed, stagedBytes, 'every staged file is hashed once');
    await dir.install(manifest);
    assert.deepEqual(await tree(dir.versionDir('v1')), shasOf(files));
  }));

test('stamps of another boot, or where the boot id cannot be read, are not trusted: every staged file is hashed again', () =>
  inTempDir(async (root) => {
    const { dir, files, manifest, staging, stagedBytes } = await interruptedStaging(root, 'boot-a');
    let last: StageProgress | undefined;
    // No boot id: nothing trusted, nothing recorded (the run fails at the same file again).
    await assert.rejects(stageVersion({ manifest, dir, fetcher: fetcherOf(files, { path: 'zz-full.bin', staging }).fetcher, wholeFileBytes: PAGE, bootId: null, onProgress: (p) => (last = p) }));
    assert.equal(last?.bytesRehashed, stagedBytes);
    const progress = await stageVersion({ manifest, dir, fetcher: fetcherOf(files).fetcher, wholeFileBytes: PAGE, bootId: 'boot-b' });
    assert.equal(progress.bytesResumed, stagedBytes);
    assert.equal(progress.bytesRehashed, stagedBytes, "boot-a's stamps are not trusted after a reboot");
    await dir.install(manifest);
    assert.deepEqual(await tree(dir.versionDir('v1')), shasOf(files));
  }));

test('staged stamps that cannot be written fail nothing: the round fails with its own error and the next run hashes again', () =>
  inTempDir(async (root) => {
    const dir = new ReleaseDir(root);
    await dir.init();
    // A directory at the stamps' name: the rename of their temp file fails, as a full disk fails its write.
    await mkdir(join(dir.stagedStampFile('v1'), 'in-the-way'), { recursive: true });
    const files = { 'a.bin': randomBytes(PAGE + 1), 'zz-full.bin': randomBytes(10) };
    const manifest = manifestOf(files, 'v1');
    await assert.rejects(
      stageVersion({ manifest, dir, fetcher: fetcherOf(files, { path: 'zz-full.bin', staging: dir.stagingDir('v1') }).fetcher, bootId: 'boot-a' }),
      (err: unknown) => err instanceof FanoutError && err.code === 'DISK_FULL',
    );
    const progress = await stageVersion({ manifest, dir, fetcher: fetcherOf(files).fetcher, bootId: 'boot-a' });
    assert.equal(progress.bytesRehashed, files['a.bin'].length);
    await dir.install(manifest);
    assert.deepEqual(await tree(dir.versionDir('v1')), shasOf(files));
  }));

test("other versions' staged stamps (and their writes' temp files) go with their staging; the staged version's stay", () =>
  inTempDir(async (root) => {
    const dir = new ReleaseDir(root);
    await dir.init();
    const leftovers = ['.staging-old@stamps.json', '..staging-old@stamps.json.4242.0.tmp', '.staging-next@stamps.json'];
    for (const name of leftovers) await writeFile(join(root, name), '{}');
    await mkdir(dir.stagingDir('next'));
    await dir.dropOtherStaging('next');
    assert.deepEqual((await readdir(root)).filter((n) => n.startsWith('.staging') || n.startsWith('..staging')).sort(), ['.staging-next', '.staging-next@stamps.json']);
    await dir.prune(1);
    assert.deepEqual((await readdir(root)).filter((n) => n.includes('staging')), [], 'a prune outside staging drops them all');
  }));
