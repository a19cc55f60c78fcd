import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cp, lstat, mkdtemp, open, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkInstalled, describeDamage } from './damage.js';
import type { ReleaseFetcher } from './fetch.js';
import { ClockWithStep } from './fsclock.testkit.js';
import { ReleaseDir } from './install.js';
import type { Manifest, ManifestFile } from './manifest.js';
import { manifestOf } from './manifest.testkit.js';
import { repairCurrent } from './repair.js';
import { stageVersion } from './stage.js';

const PAGE = 4096;

const fetcherOf = (files: Record<string, Buffer>) =>
  ({
    release() {},
    manifest: async () => undefined,
    pageChunks: async (_m: Manifest, file: ManifestFile, index: number) => [files[file.path]!.subarray(index * PAGE, (index + 1) * PAGE)],
  }) as unknown as ReleaseFetcher;

/** v1 installed and current, then `a.bin` damaged (edited in place): what a repair starts from. */
async function damagedCurrent(root: string) {
  const files = { 'a.bin': randomBytes(3 * PAGE), 'b.bin': randomBytes(2 * PAGE), 'sub/c.bin': randomBytes(100) };
  const dir = new ReleaseDir(root);
  await dir.init();
  const manifest = manifestOf(files, 'v1');
  await stageVersion({ manifest, dir, fetcher: fetcherOf(files) });
  await dir.install(manifest);
  await dir.switchTo('v1');
  await dir.clock.pastNow();
  await editInPlace(join(dir.current, 'a.bin'));
  assert.deepEqual((await checkInstalled(dir, manifest)).damaged, [{ path: 'a.bin', reason: 'content' }]);
  return { dir, files, manifest };
}

async function editInPlace(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  await handle.write(Buffer.from('same size, other bytes'), 0, undefined, 10);
  await handle.close();
}

async function inTempDir(body: (root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'fanout-repair-'));
  try {
    await body(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

test('a repaired version is stamped whole: the next check reads nothing', () =>
  inTempDir(async (root) => {
    const { dir, files, manifest } = await damagedCurrent(root);
    await repairCurrent({ dir, manifest, fetcher: fetcherOf(files) });
    assert.deepEqual(await checkInstalled(dir, manifest), { damaged: [], touched: [], bytesRehashed: 0 });
  }));

test('a write through current/ and an entry added there between the repair’s switch and its stamps are found by the next check', () =>
  inTempDir(async (root) => {
    const { dir, files, manifest } = await damagedCurrent(root);
    // The service writes just as the repair waits for the clock before stamping: `current` is
    // back on versions/v1, the repaired tree.
    let written = false;
    dir.clock = new ClockWithStep(join(root, '.stamp-clock'), async () => {
      if (written) return;
      written = true;
      await editInPlace(join(dir.current, 'b.bin'));
      await writeFile(join(dir.current, 'sub/extra.bin'), 'added');
    });
    await repairCurrent({ dir, manifest, fetcher: fetcherOf(files) });
    assert.ok(written);
    const check = await checkInstalled(dir, manifest);
    assert.deepEqual(
      check.damaged.map((d) => `${d.path} ${d.reason}`).sort(),
      ['b.bin content', 'sub/extra.bin extra'],
    );
  }));

test('a directory of current/ replaced by a link to an outside copy of it is damage, and the repair puts a real directory back with files of its own', () =>
  inTempDir(async (root) => {
    const { dir, files, manifest } = await damagedCurrent(root);
    const outside = join(root, 'outside');
    await cp(join(dir.current, 'sub'), outside, { recursive: true });
    await rename(join(dir.versionDir('v1'), 'sub'), join(root, 'moved-away'));
    await symlink(outside, join(dir.versionDir('v1'), 'sub'));
    const check = await checkInstalled(dir, manifest);
    assert.deepEqual(check.damaged.map((d) => `${d.path} ${d.reason}`).sort(), ['a.bin content', 'sub/ not-directory']);
    assert.match(describeDamage('v1', check.damaged), /sub\/: not a directory \(a link or a file\)/);
    assert.equal((await checkInstalled(dir, manifest)).damaged.length, 2, 'found again: the files under the link were not stamped as its target’s');
    await repairCurrent({ dir, manifest, fetcher: fetcherOf(files) });
    assert.ok((await lstat(join(dir.versionDir('v1'), 'sub'))).isDirectory());
    assert.notEqual((await lstat(join(dir.current, 'sub/c.bin'))).ino, (await lstat(join(outside, 'c.bin'))).ino, 'no link to the outside file');
    assert.deepEqual(await readFile(join(dir.current, 'sub/c.bin')), files['sub/c.bin']);
    assert.deepEqual(await checkInstalled(dir, manifest), { damaged: [], touched: [], bytesRehashed: 0 });
  }));

test('versions/V of the current version replaced by a link to an outside copy is damage, and the repair’s files are not the outside inodes', () =>
  inTempDir(async (root) => {
    const { dir, files, manifest } = await damagedCurrent(root);
    const outside = join(root, 'outside');
    await cp(dir.versionDir('v1'), outside, { recursive: true });
    await writeFile(join(outside, 'a.bin'), files['a.bin']);
    await rename(dir.versionDir('v1'), join(root, 'moved-away'));
    await symlink(outside, dir.versionDir('v1'));
    const check = await checkInstalled(dir, manifest);
    assert.deepEqual(check.damaged, [{ path: './', reason: 'not-directory' }]);
    assert.equal(check.bytesRehashed, 0, 'no file read through the link');
    await repairCurrent({ dir, manifest, fetcher: fetcherOf(files) });
    assert.ok((await lstat(dir.versionDir('v1'))).isDirectory());
    for (const path of Object.keys(files)) {
      assert.notEqual((await lstat(join(dir.current, path))).ino, (await lstat(join(outside, path))).ino, `${path}: no link to the outside file`);
      assert.deepEqual(await readFile(join(dir.current, path)), files[path as keyof typeof files]);
    }
    assert.deepEqual(await checkInstalled(dir, manifest), { damaged: [], touched: [], bytesRehashed: 0 });
  }));
