import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { FanoutError } from '../core/errors.js';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReleaseDir } from './install.js';
import type { Manifest } from './manifest.js';

function manifest(version: string): Manifest {
  return { schema: 1, name: 'app', version, createdAt: new Date().toISOString(), mount: 'data', prefix: '', pageSize: 4096, files: [] };
}

async function stage(dir: ReleaseDir, version: string): Promise<void> {
  await mkdir(dir.stagingDir(version), { recursive: true });
  await writeFile(join(dir.stagingDir(version), 'data.txt'), version);
  await dir.install(manifest(version));
}

/** A switch as the agent makes it: current moved, then the history recorded. */
async function switchTo(dir: ReleaseDir, version: string): Promise<void> {
  const previous = await dir.currentVersion();
  await dir.switchTo(version);
  await dir.recordSwitch(version, previous);
}

test('switching repoints current atomically and keeps the old version until pruned', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-switch-'));
  try {
    const dir = new ReleaseDir(root);
    await dir.init();
    assert.equal(await dir.currentVersion(), null);
    await stage(dir, 'v1');
    await switchTo(dir, 'v1');
    assert.equal(await readFile(join(root, 'current', 'data.txt'), 'utf8'), 'v1');
    assert.equal(await readlink(join(root, 'current')), join('versions', 'v1'));

    await stage(dir, 'v2');
    // Staged and installed, but not switched: current still reads v1.
    assert.equal(await readFile(join(root, 'current', 'data.txt'), 'utf8'), 'v1');
    await switchTo(dir, 'v2');
    assert.equal(await dir.currentVersion(), 'v2');
    assert.deepEqual(await dir.prune(1), []);

    await stage(dir, 'v3');
    await switchTo(dir, 'v3');
    assert.deepEqual(await dir.prune(1), ['v1']);
    assert.deepEqual((await dir.installed()).sort(), ['v2', 'v3']);
    assert.ok(await dir.manifestOf('v2'));
    assert.equal(await dir.manifestOf('v1'), undefined);

    // Rolling back to a kept version needs no download; keep 0 leaves only current.
    await switchTo(dir, 'v2');
    assert.equal(await readFile(join(root, 'current', 'data.txt'), 'utf8'), 'v2');
    assert.deepEqual(await dir.prune(0), ['v3']);
    // No temporary links or staging left behind.
    assert.deepEqual((await readdir(root)).filter((n) => n.startsWith('.current-') || n.startsWith('.staging-')), []);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a switch whose record was lost (a kill right after it) does not cost the next switch its rollback version', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-switch-'));
  try {
    const dir = new ReleaseDir(root);
    await dir.init();
    for (const v of ['v1', 'v2']) await stage(dir, v);
    await switchTo(dir, 'v1');
    await dir.switchTo('v2'); // killed before recordSwitch: the history still says v1
    assert.deepEqual(await dir.prune(1), []);
    await stage(dir, 'v3');
    await switchTo(dir, 'v3');
    // v2, the version just left, is the one kept for a rollback; v1 goes.
    assert.deepEqual(await dir.prune(1), ['v1']);
    assert.deepEqual((await dir.installed()).sort(), ['v2', 'v3']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('switching to a version that is not installed fails and leaves current alone', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-switch-'));
  try {
    const dir = new ReleaseDir(root);
    await dir.init();
    await stage(dir, 'v1');
    await switchTo(dir, 'v1');
    await assert.rejects(dir.switchTo('v9'));
    assert.equal(await dir.currentVersion(), 'v1');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('prune removes staging leftovers of other versions but not the one being staged', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-switch-'));
  try {
    const dir = new ReleaseDir(root);
    await dir.init();
    await mkdir(dir.stagingDir('old'), { recursive: true });
    await mkdir(dir.stagingDir('next'), { recursive: true });
    await dir.prune(1, 'next');
    assert.deepEqual((await readdir(root)).filter((n) => n.startsWith('.staging-')), ['.staging-next']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a corrupt release history is reported, moved aside, and written anew at the next switch', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-switch-'));
  try {
    const reports: string[] = [];
    const dir = new ReleaseDir(root, (r) => reports.push(r.file));
    await dir.init();
    await stage(dir, 'v1');
    await switchTo(dir, 'v1');
    await writeFile(join(root, '.history.json'), '["v1", ');
    await stage(dir, 'v2');
    await switchTo(dir, 'v2');
    assert.deepEqual(reports, [join(root, '.history.json')]);
    assert.equal((await readdir(root)).filter((n) => n.startsWith('.history.json.corrupt-')).length, 1);
    // Written anew from the switch: the version switched to and the one it replaced.
    assert.deepEqual(JSON.parse(await readFile(join(root, '.history.json'), 'utf8')), ['v2', 'v1']);
    assert.deepEqual((await readdir(root)).filter((n) => n.endsWith('.tmp')), [], 'no temp files');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

/** What a released lock leaves in `root`, but its flock file (kept for good: every holder locks one inode). */
const lockLeftovers = async (root: string) => (await readdir(root)).filter((name) => name !== '.sync.lock.flock');

test('one agent per directory: a second lock is DIR_IN_USE, a lock left by a dead agent is taken over', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-lock-'));
  try {
    const dir = new ReleaseDir(root);
    const unlock = await dir.lock();
    await assert.rejects(dir.lock(), (err: FanoutError) => err.code === 'DIR_IN_USE' && err.message.includes(String(process.pid)));
    await unlock();
    assert.deepEqual(await lockLeftovers(root), []);
    // What a killed agent leaves: its pid, no longer running.
    const dead = spawnSync('true').pid!;
    await writeFile(join(root, '.sync.lock'), `${dead} 12345`);
    const again = await dir.lock();
    assert.match(await readFile(join(root, '.sync.lock'), 'utf8'), new RegExp(`^${process.pid} `));
    await again();
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('agents taking over one stale lock at once: exactly one holds the directory, the others get DIR_IN_USE', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-lock-'));
  try {
    const dead = spawnSync('true').pid!;
    // The race needs a taker to read the stale lock before another replaces it: many trials.
    for (let trial = 0; trial < 40; trial++) {
      await writeFile(join(root, '.sync.lock'), `${dead} 12345`);
      const results = await Promise.allSettled(Array.from({ length: 8 }, () => new ReleaseDir(root).lock()));
      const holders = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      assert.equal(holders.length, 1, `trial ${trial}: ${holders.length} holders`);
      for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as FanoutError).code, 'DIR_IN_USE', String(r.reason));
      await holders[0]!();
      assert.deepEqual(await lockLeftovers(root), [], 'no lock, claim or temp file left');
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a takeover claim left by a taker that died does not block the takeover', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-lock-'));
  try {
    const dead = spawnSync('true').pid!;
    const stale = `${dead} 12345`;
    await writeFile(join(root, '.sync.lock'), stale);
    const claim = `.sync.lock.takeover-${createHash('sha256').update(stale).digest('hex').slice(0, 16)}`;
    await writeFile(join(root, claim), `${dead} 12345 abc`);
    const unlock = await new ReleaseDir(root).lock();
    assert.match(await readFile(join(root, '.sync.lock'), 'utf8'), new RegExp(`^${process.pid} `));
    await unlock();
    assert.deepEqual(await lockLeftovers(root), []);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('releasing a lock that is no longer ours leaves the other holder\'s lock in place', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-lock-'));
  try {
    const unlock = await new ReleaseDir(root).lock();
    // Another agent's lock where ours was (ours was wrongly taken for stale and replaced).
    const other = `${process.ppid} 1 other`;
    await writeFile(join(root, '.sync.lock'), other);
    await unlock();
    assert.equal(await readFile(join(root, '.sync.lock'), 'utf8'), other);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

async function withRoot(run: (root: string, dir: ReleaseDir) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'fanout-install-'));
  try {
    const dir = new ReleaseDir(root);
    await dir.init();
    await run(root, dir);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

test("a version's stamps are never another version's manifest (versions v1 and v1.stamps side by side)", async () => {
  await withRoot(async (_root, dir) => {
    await stage(dir, 'v1.stamps');
    await stage(dir, 'v1');
    assert.equal((await dir.manifestOf('v1.stamps'))?.version, 'v1.stamps', "v1's stamps did not overwrite the manifest of v1.stamps");
    // No files, and its root holds data.txt, which its manifest does not list: not stamped either.
    assert.deepEqual(await dir.stampsOf('v1'), {}, "v1's own stamps, not the manifest of v1.stamps");
    assert.notEqual(dir.stampFile('v1'), dir.manifestFile('v1.stamps'));
  });
});

test('an install that fails after its tree moved (a full disk at its manifest or stamps) puts the verified tree back in staging', async () => {
  await withRoot(async (_root, dir) => {
    await mkdir(dir.stagingDir('v1'), { recursive: true });
    await writeFile(join(dir.stagingDir('v1'), 'data.txt'), 'v1');
    // The stamps, written after the tree moved and the manifest was kept, fail: a file they name is not there.
    const failing: Manifest = { ...manifest('v1'), files: [{ path: 'gone.txt', size: 1, sourceVersion: 'x', sha256: 'a'.repeat(64), pages: ['a'.repeat(64)] }] };
    await assert.rejects(dir.install(failing), /ENOENT/);
    assert.deepEqual(await readdir(dir.stagingDir('v1')), ['data.txt'], 'the staged files are back, to be kept by the next round');
    assert.deepEqual(await dir.installed(), [], 'no tree left in versions/');
    assert.equal(await dir.manifestOf('v1'), undefined, 'nor its manifest');
  });
});

test("a tree left in versions/ without its manifest (a kill between the rename and the manifest's write) goes back to staging", async () => {
  await withRoot(async (_root, dir) => {
    await mkdir(dir.versionDir('v2'), { recursive: true });
    await writeFile(join(dir.versionDir('v2'), 'data.txt'), 'v2');
    await dir.reclaimUnfinished('v2');
    assert.deepEqual(await dir.installed(), []);
    assert.equal(await readFile(join(dir.stagingDir('v2'), 'data.txt'), 'utf8'), 'v2');
    // An installed version (with its manifest) is left alone.
    await stage(dir, 'v3');
    await dir.reclaimUnfinished('v3');
    assert.deepEqual(await dir.installed(), ['v3']);
  });
});

test('versions/ on another file system than the directory is INVALID_CONFIG at once, not EXDEV after a whole download', { skip: process.getuid?.() !== 0 ? 'needs root (a tmpfs mount)' : false }, async () => {
  await withRoot(async (root, dir) => {
    const versions = join(root, 'versions');
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', versions]);
    assert.equal(mounted.status, 0, String(mounted.stderr));
    try {
      await assert.rejects(dir.init(), (err: FanoutError) => err.code === 'INVALID_CONFIG' && /another file system/.test(err.message));
    } finally {
      spawnSync('umount', ['-l', versions]);
    }
  });
});
