import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstatSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkInstalled, describeDamage } from './damage.js';
import type { ReleaseFetcher } from './fetch.js';
import type { FileSystemClock } from './fsclock.js';
import { StandingClock, StoppedClock } from './fsclock.testkit.js';
import { ReleaseDir, stampOf, type FileStamp } from './install.js';
import type { Manifest, ManifestFile } from './manifest.js';
import { manifestOf } from './manifest.testkit.js';
import { stageVersion } from './stage.js';

const PAGE = 4096;

/** Pages from memory. */
const fetcherOf = (files: Record<string, Buffer>) =>
  ({
    release() {},
    pageChunks: async (_m: Manifest, file: ManifestFile, index: number) => [files[file.path]!.subarray(index * PAGE, (index + 1) * PAGE)],
  }) as unknown as ReleaseFetcher;

async function installed(root: string, files: Record<string, Buffer>, clock?: FileSystemClock): Promise<{ dir: ReleaseDir; manifest: Manifest }> {
  const dir = new ReleaseDir(root);
  if (clock) dir.clock = clock;
  await dir.init();
  const manifest = manifestOf(files, 'v1');
  await stageVersion({ manifest, dir, fetcher: fetcherOf(files) });
  await dir.install(manifest);
  return { dir, manifest };
}

/**
 * What a write in the clock tick of the stamp leaves: the file's stamp in `V@stamps.json`, if it
 * has one, is what the file shows now (the write kept the ctime the stamp recorded).
 */
async function writeKeptTheCtime(dir: ReleaseDir, path: string): Promise<void> {
  const saved = JSON.parse(await readFile(dir.stampFile('v1'), 'utf8')) as { files: Record<string, FileStamp> };
  if (!(path in saved.files)) return;
  saved.files[path] = stampOf(lstatSync(join(dir.versionDir('v1'), path), { bigint: true }));
  await writeFile(dir.stampFile('v1'), JSON.stringify(saved));
}

async function inTempDir(body: (root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'fanout-damage-'));
  try {
    await body(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

test('a file edited in place in the clock tick of its stamp is hashed again at the next check, and its damage found', () =>
  inTempDir(async (root) => {
    const files = { 'a.bin': randomBytes(3 * PAGE), 'b.bin': randomBytes(100) };
    const { dir, manifest } = await installed(root, files, new StoppedClock());
    const handle = await open(join(dir.versionDir('v1'), 'a.bin'), 'r+');
    await handle.write(Buffer.from('same size, other bytes'), 0, undefined, 10);
    await handle.close();
    await writeKeptTheCtime(dir, 'a.bin');
    const check = await checkInstalled(dir, manifest);
    assert.deepEqual(check.damaged, [{ path: 'a.bin', reason: 'content' }]);
    assert.deepEqual(check.touched, ['b.bin'], 'the racy, intact file is hashed too');
  }));

test('files installed before the clock moved on are stamped: a check reads nothing', () =>
  inTempDir(async (root) => {
    const files = { 'a.bin': randomBytes(3 * PAGE), 'sub/b.bin': randomBytes(100) };
    const { dir, manifest } = await installed(root, files);
    assert.deepEqual(Object.keys(await dir.stampsOf('v1')).sort(), ['./', 'a.bin', 'sub/', 'sub/b.bin'], 'its files and directories');
    assert.deepEqual(await checkInstalled(dir, manifest), { damaged: [], touched: [], bytesRehashed: 0 });
  }));

test('a file touched in the clock tick of the check is not stamped again until a later check finds its change older', () =>
  inTempDir(async (root) => {
    const files = { 'a.bin': randomBytes(3 * PAGE), 'b.bin': randomBytes(100) };
    const { dir, manifest } = await installed(root, files);
    await chmod(join(dir.versionDir('v1'), 'a.bin'), 0o600);
    const clock = dir.clock;
    dir.clock = new StoppedClock();
    assert.deepEqual((await checkInstalled(dir, manifest)).touched, ['a.bin']);
    assert.deepEqual(await dir.changedFiles(manifest), ['a.bin'], 'racy: not stamped');
    dir.clock = clock;
    const again = await checkInstalled(dir, manifest);
    assert.deepEqual({ touched: again.touched, bytesRehashed: again.bytesRehashed }, { touched: ['a.bin'], bytesRehashed: files['a.bin'].length });
    assert.deepEqual(await dir.changedFiles(manifest), [], 'stamped once its change is older than the clock');
  }));

test('a file or a directory added to the tree that the manifest does not list is damage, named with its directory; a check lists only changed directories', () =>
  inTempDir(async (root) => {
    const files = { 'a.bin': randomBytes(100), 'sub/b.bin': randomBytes(100), 'sub/deeper/c.bin': randomBytes(100) };
    const { dir, manifest } = await installed(root, files);
    const tree = dir.versionDir('v1');
    await writeFile(join(tree, 'extra.bin'), 'added');
    await mkdir(join(tree, 'sub/deeper/new/more'), { recursive: true });
    await writeFile(join(tree, 'sub/deeper/new/more/x.bin'), 'added');
    await symlink('/etc', join(tree, 'sub/link'));
    const check = await checkInstalled(dir, manifest);
    assert.deepEqual(
      check.damaged.map((d) => `${d.path} ${d.reason}`).sort(),
      ['extra.bin extra', 'sub/deeper/new/ extra', 'sub/link extra'],
      'an added directory is named, not what it holds',
    );
    assert.match(describeDamage('v1', check.damaged), /^3 file\(s\) of v1 damaged \(.*extra\.bin: not in the manifest/);
    // Found again by the next check (not stamped while they are there), gone once removed.
    assert.equal((await checkInstalled(dir, manifest)).damaged.length, 3);
    await rm(join(tree, 'extra.bin'));
    await rm(join(tree, 'sub/deeper/new'), { recursive: true });
    await rm(join(tree, 'sub/link'));
    assert.deepEqual((await checkInstalled(dir, manifest)).damaged, []);
    assert.ok('sub/deeper/' in (await dir.stampsOf('v1')), 'the directory listed and found exact is stamped again');
  }));

test('an entry added in the clock tick of its directory’s stamp is found: the directory is listed again', () =>
  inTempDir(async (root) => {
    const files = { 'a.bin': randomBytes(100) };
    const { dir, manifest } = await installed(root, files, new StoppedClock());
    await writeFile(join(dir.versionDir('v1'), 'extra.bin'), 'added');
    // What an addition in that tick leaves: the directory's stamp, if it has one, is what it shows now.
    const saved = JSON.parse(await readFile(dir.stampFile('v1'), 'utf8')) as { files: Record<string, FileStamp> };
    if ('./' in saved.files) {
      saved.files['./'] = stampOf(lstatSync(dir.versionDir('v1'), { bigint: true }));
      await writeFile(dir.stampFile('v1'), JSON.stringify(saved));
    }
    assert.deepEqual((await checkInstalled(dir, manifest)).damaged, [{ path: 'extra.bin', reason: 'extra' }]);
  }));

test('a file linked from the current version and written through current/ while the next version was staged is not stamped as verified: its damage is found', () =>
  inTempDir(async (root) => {
    const shared = randomBytes(3 * PAGE);
    const { dir } = await installed(root, { 'shared.bin': shared, 'own.bin': randomBytes(100) });
    const v2 = { 'shared.bin': shared, 'own.bin': randomBytes(200) };
    const manifest = manifestOf(v2, 'v2');
    const progress = await stageVersion({ manifest, dir, fetcher: fetcherOf(v2) });
    assert.equal(progress.bytesLocal, shared.length, 'shared.bin is v1’s inode, hard-linked');
    // The service writes through current/ (still v1) once the clock moved past the link.
    await dir.clock.pastNow();
    const handle = await open(join(dir.versionDir('v1'), 'shared.bin'), 'r+');
    await handle.write(Buffer.from('written by the service'), 0, undefined, 100);
    await handle.close();
    await dir.install(manifest);
    assert.deepEqual((await checkInstalled(dir, manifest)).damaged, [{ path: 'shared.bin', reason: 'content' }]);
  }));

for (const [staged, how] of [
  ['racy at its rename', { clock: true, bootId: undefined }],
  ['staged with no boot id', { clock: false, bootId: null }],
] as const) {
  test(`a file linked from the current version with no stamp of its verification (${staged}) and written through current/ before the install is not stamped: its damage is found`, () =>
    inTempDir(async (root) => {
      const shared = randomBytes(3 * PAGE);
      const { dir } = await installed(root, { 'shared.bin': shared, 'own.bin': randomBytes(100) });
      const v2 = { 'shared.bin': shared, 'own.bin': randomBytes(200) };
      const manifest = manifestOf(v2, 'v2');
      // Racy: the clock stands in the tick of every rename while v2 is staged, then moves on.
      const clock = dir.clock;
      if (how.clock) dir.clock = new StandingClock();
      assert.equal((await stageVersion({ manifest, dir, fetcher: fetcherOf(v2), bootId: how.bootId })).bytesLocal, shared.length);
      await dir.clock.pastNow();
      dir.clock = clock;
      const handle = await open(join(dir.versionDir('v1'), 'shared.bin'), 'r+');
      await handle.write(Buffer.from('written by the service'), 0, undefined, 100);
      await handle.close();
      await dir.install(manifest);
      assert.deepEqual((await checkInstalled(dir, manifest)).damaged, [{ path: 'shared.bin', reason: 'content' }]);
    }));
}

test('a kept version whose files the next version hard-linked keeps valid stamps: a rollback check reads nothing again', () =>
  inTempDir(async (root) => {
    const shared = randomBytes(3 * PAGE);
    const { dir, manifest: v1 } = await installed(root, { 'shared.bin': shared, 'own.bin': randomBytes(100) });
    const v2files = { 'shared.bin': shared, 'own.bin': randomBytes(200) };
    const v2 = manifestOf(v2files, 'v2');
    assert.equal((await stageVersion({ manifest: v2, dir, fetcher: fetcherOf(v2files) })).bytesLocal, shared.length);
    await dir.install(v2);
    // The link changed the inode's ctime: v1's own stamp no longer matches, v2's does.
    assert.deepEqual(await dir.changedFiles(v1), []);
    assert.deepEqual(await checkInstalled(dir, v1), { damaged: [], touched: [], bytesRehashed: 0 });
  }));

test('stamps written by an older build (no format) are not trusted: every file is hashed once, a write they hid is found, the rest is stamped again', () =>
  inTempDir(async (root) => {
    const files = { 'a.bin': randomBytes(3 * PAGE), 'sub/b.bin': randomBytes(100) };
    const { dir, manifest } = await installed(root, files);
    const handle = await open(join(dir.versionDir('v1'), 'a.bin'), 'r+');
    await handle.write(Buffer.from('same size, other bytes'), 0, undefined, 10);
    await handle.close();
    // What an older build left: its stamps as a plain map, taken after that write (in its tick).
    const old: Record<string, FileStamp> = {};
    for (const path of ['a.bin', 'sub/b.bin', '.', 'sub']) old[path === '.' || path === 'sub' ? `${path}/` : path] = stampOf(lstatSync(join(dir.versionDir('v1'), path), { bigint: true }));
    await writeFile(dir.stampFile('v1'), JSON.stringify(old));
    const lines: string[] = [];
    const fresh = new ReleaseDir(root, undefined, (line) => lines.push(line));
    const first = await checkInstalled(fresh, manifest);
    assert.deepEqual(first.damaged, [{ path: 'a.bin', reason: 'content' }]);
    assert.deepEqual(first.touched, ['sub/b.bin'], 'the intact file is hashed too');
    assert.match(lines.join('\n'), /stamps of v1 .* older format: not trusted/);
    assert.equal(JSON.parse(await readFile(dir.stampFile('v1'), 'utf8')).format, 2, 'stamped again in this format');
    const second = await checkInstalled(fresh, manifest);
    assert.deepEqual({ damaged: second.damaged, touched: second.touched, bytesRehashed: second.bytesRehashed }, { damaged: [{ path: 'a.bin', reason: 'content' }], touched: [], bytesRehashed: files['a.bin'].length }, 'once: only the damaged file is read again');
  }));
