import { lstatSync, type BigIntStats } from 'node:fs';
import { link, lstat, mkdir, readFile, readlink, rename, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { ReleaseFetcher } from './fetch.js';
import { fsyncDir, inSlices, matchesStamp, writeAtomic, type ReleaseDir } from './install.js';
import type { Manifest } from './manifest.js';
import { stageVersion, type StageProgress } from './stage.js';
import { readBootId, StagedStamps } from './stagestamps.js';

/** `.repair-V/verified.json`: each file's data as verified, taken before `current` showed the copy. */
const VERIFIED_DATA = 'verified.json';

/**
 * A file's data as verified: its inode, size and mtime. The repair's own links and unlinks after
 * the switch change every file's ctime, so a ctime stamp cannot tell a write through `current/`
 * in that time from them; they leave the mtime alone, and a write does not.
 */
interface DataStamp {
  ino: number;
  size: number;
  mtimeNs: string;
}

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
  // Read before the tree moves, as an install does: what staging verified, file by file.
  const verified = await StagedStamps.load(dir.stagedStampFile(version), await readBootId(), dir.clock);
  const aside = dir.repairDir(version);
  await rm(aside, { recursive: true, force: true });
  await mkdir(aside);
  await rename(dir.stagingDir(version), join(aside, version));
  await rm(dir.stagedStampFile(version), { force: true });
  await recordVerifiedData(join(aside, version), manifest, verified, join(aside, VERIFIED_DATA));
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
  // Read before `.repair-V` goes with it; none (a repair by an older build): nothing is stamped,
  // every file is hashed at the next check.
  const verified = onRepair ? await readVerifiedData(join(aside, VERIFIED_DATA)) : {};
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
  // Only files whose data is as verified: one written through `current/` since the switch (before,
  // stamped as it was, so that no later check read it) is left unstamped, hashed at the next check.
  if (onRepair) await dir.stampInstalled(manifest, (path, st) => sameData(st, Object.hasOwn(verified, path) ? verified[path] : undefined));
  return onRepair;
}

/**
 * Records the data stamp of each file of the repaired copy still as staging verified it (its
 * staged stamp matches: no write since, as a write changes the ctime). Any later write changes
 * the mtime: the staged stamp's ctime is older than a clock reading, and so is the mtime. A file
 * without a staged stamp (racy) is not recorded, and goes unstamped.
 */
async function recordVerifiedData(tree: string, manifest: Manifest, verified: StagedStamps, file: string): Promise<void> {
  const data: Record<string, DataStamp> = {};
  await inSlices(manifest.files, (f) => {
    const st = lstatSync(join(tree, f.path), { bigint: true, throwIfNoEntry: false });
    if (st && matchesStamp(st, verified.verifiedStamp(f.path))) data[f.path] = { ino: Number(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs) };
  });
  await writeAtomic(file, Buffer.from(JSON.stringify(data)));
}

async function readVerifiedData(file: string): Promise<Record<string, DataStamp>> {
  try {
    const value: unknown = JSON.parse(await readFile(file, 'utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, DataStamp>) : {};
  } catch {
    return {};
  }
}

function sameData(st: BigIntStats, data: DataStamp | undefined): boolean {
  return data !== undefined && Number(st.ino) === data.ino && Number(st.size) === data.size && String(st.mtimeNs) === data.mtimeNs;
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
