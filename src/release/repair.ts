import { link, lstat, mkdir, readlink, rename, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { ReleaseFetcher } from './fetch.js';
import { fsyncDir, type ReleaseDir } from './install.js';
import type { Manifest } from './manifest.js';
import { stageVersion, type StageProgress } from './stage.js';

export interface RepairOptions {
  dir: ReleaseDir;
  /** The current version's: `current` points to versions/V, some of whose files are damaged. */
  manifest: Manifest;
  fetcher: ReleaseFetcher;
  limiter?: { take(bytes: number, signal?: AbortSignal): Promise<void> };
  signal?: AbortSignal;
  onProgress?: (progress: StageProgress) => void;
}

/**
 * Repairs the current version without readers of `current` ever seeing a partial tree. The tree
 * `current` points to cannot be mended in place (a reader would see files come and go), nor
 * replaced by a rename (versions/V is in use, and Node has no RENAME_EXCHANGE). So:
 *   1. a fresh copy of V is staged in `.staging-V` by the usual machinery: every file verified,
 *      untouched ones hard-linked, ones changed since verified copied (they may have been
 *      written through and still be: a link would share that inode), damaged ones fetched;
 *   2. it is moved to `.repair-V/V` and `current` is switched to it (one rename of a link);
 *   3. finishRepair: versions/V is replaced (read by no one now) by hard links to that copy,
 *      `current` is switched back to versions/V, and `.repair-V` with the damaged tree goes.
 * A kill at any point leaves `current` on a whole tree; finishRepair, run at every round's
 * start, completes step 3.
 */
export async function repairCurrent(opts: RepairOptions): Promise<StageProgress> {
  const { dir, manifest } = opts;
  const version = manifest.version;
  await dir.dropOtherStaging(version);
  const progress = await stageVersion({ ...opts, copyChanged: true });
  const aside = dir.repairDir(version);
  await rm(aside, { recursive: true, force: true });
  await mkdir(aside);
  await rename(dir.stagingDir(version), join(aside, version));
  await rm(dir.stagedStampFile(version), { force: true });
  await fsyncDir(aside);
  await dir.pointCurrentAt(repairTarget(version));
  await finishRepair(dir, manifest);
  return progress;
}

/**
 * Completes a repair cut short (see repairCurrent), or drops what one left before its switch.
 * Returns whether `current` pointed into the repair (and so was moved back to versions/V).
 */
export async function finishRepair(dir: ReleaseDir, manifest: Manifest): Promise<boolean> {
  const version = manifest.version;
  const aside = dir.repairDir(version);
  if (!(await exists(aside))) return false;
  const onRepair = (await readlink(dir.current).catch(() => undefined)) === repairTarget(version);
  if (onRepair) {
    const linked = join(aside, 'linked');
    const damaged = join(aside, 'damaged');
    await rm(linked, { recursive: true, force: true });
    await linkTree(join(aside, version), linked, manifest);
    await rm(dir.stampFile(version), { force: true });
    await rm(damaged, { recursive: true, force: true });
    await rename(dir.versionDir(version), damaged).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err; // moved aside already, by the repair this one completes
    });
    await rename(linked, dir.versionDir(version));
    await fsyncDir(join(dir.dir, 'versions'));
    await dir.pointCurrentAt(join('versions', version));
  }
  // Removed before the stamps are taken: each removed link changes its inode's ctime.
  await rm(aside, { recursive: true, force: true });
  if (onRepair) await dir.stampInstalled(manifest);
  return onRepair;
}

/** `current`'s target during a repair: its last segment is still V, so currentVersion() is unchanged. */
function repairTarget(version: string): string {
  return posix.join(`.repair-${version}`, version);
}

/** A second name for every file of `from` under `to` (same inodes: the copy readers use now). */
async function linkTree(from: string, to: string, manifest: Manifest): Promise<void> {
  const dirs = new Set<string>(['.']);
  for (const file of manifest.files) dirs.add(posix.dirname(file.path));
  for (const d of dirs) await mkdir(join(to, d), { recursive: true });
  for (const file of manifest.files) await link(join(from, file.path), join(to, file.path));
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}
