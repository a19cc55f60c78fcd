import { lstatSync, type BigIntStats } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../lib/statefile/index.js';
import { ClockReadings, settledBefore, type FileSystemClock } from './fsclock.js';
import { matchesStamp, stampOf, STAMPS_FORMAT, type FileStamp } from './filestamp.js';
import type { ManifestFile } from './manifest.js';

/**
 * Clock readings, back to back, a just-renamed file's stamp takes to find its rename's tick over.
 * Here the second always was (2,000 renames, two runs); where ticks are coarse (ms, seconds) the
 * file stays racy, unstamped, and is hashed if a run resumes.
 */
const PLACED_READINGS = 3;

/** The kernel's random id of this boot. */
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

/** A file verified into staging: its stamp once under its staged name, and the digest it was verified against. */
interface StagedStamp extends FileStamp {
  sha256: string;
}

/** `DIR/.staging-V@stamps.json`. */
interface StagedStampsFile {
  /** STAMPS_FORMAT: a file without it (an older build's) is not trusted. */
  format: number;
  bootId: string;
  files: Record<string, StagedStamp>;
}

/** This boot's id, or undefined where it cannot be read (not Linux): then no stamp is trusted. */
export async function readBootId(): Promise<string | undefined> {
  const id = (await readFile(BOOT_ID_FILE, 'utf8').catch(() => '')).trim();
  return id || undefined;
}

/**
 * What the staging runs of this boot verified: a resumed run trusts a staged file whose inode,
 * size and ctime are as they were once it was verified and renamed into staging, instead of
 * reading it whole again (a host retrying after DISK_FULL every round re-hashed everything
 * already staged each time: 225 MB read over 40 s per retry, found by a fault hunt). Any write,
 * truncate or replacement changes the inode or the ctime, so a changed file is hashed again.
 * A stamp is recorded only when the file's last change (its rename into staging) is older than
 * the file system's clock read after that rename and before the stat (fsclock.ts): a write in
 * the rename's clock tick would keep its ctime. Before, the clock was read once when the stamps
 * were saved, at the run's end: a file renamed minutes earlier passed, whatever was written in
 * its rename's tick.
 *
 * Only stamps of this boot count: staging is flushed once, at its end (durable.ts), so after a
 * crash a file may hold zeros or nothing at all under the very inode, size and ctime it had.
 * Where the boot id cannot be read nothing is trusted and nothing is written. Nor do stamps of
 * an older build's format (STAMPS_FORMAT): those files are hashed once.
 *
 * Kept beside `.staging-V` (never inside: staging holds the manifest's files and nothing else)
 * and dropped with it (ReleaseDir.dropOtherStaging, install).
 */
export class StagedStamps {
  private readonly recorded = new Map<string, StagedStamp>();
  private readonly readings: ClockReadings;

  private constructor(
    private readonly file: string,
    private readonly bootId: string | undefined,
    private readonly earlier: Record<string, StagedStamp>,
    clock: FileSystemClock,
  ) {
    this.readings = new ClockReadings(clock);
  }

  /**
   * The stamps an earlier run of this boot left in `file` (none if unreadable: the files are hashed
   * again). `clock`: the file system's, read before each stat that records a stamp.
   */
  static async load(file: string, bootId: string | undefined, clock: FileSystemClock): Promise<StagedStamps> {
    if (bootId === undefined) return new StagedStamps(file, undefined, {}, clock);
    let earlier: Record<string, StagedStamp> = {};
    try {
      const value = JSON.parse(await readFile(file, 'utf8')) as Partial<StagedStampsFile>;
      if (value.format === STAMPS_FORMAT && value.bootId === bootId && isObject(value.files)) earlier = value.files;
    } catch {
      // Missing or torn: a cache, not state, so nothing is moved aside or reported.
    }
    return new StagedStamps(file, bootId, earlier, clock);
  }

  /**
   * Writes `file` for an installed version taken back to staging (ReleaseDir.returnToStaging):
   * the stamps its files were installed with, each with its digest, so that staging hashes again
   * only the files changed since, not the whole version. Installed stamps are taken once the tree
   * is durable, so they hold across a boot, and are written under this one's. Never fails (a cache).
   */
  static async seed(file: string, bootId: string | undefined, files: readonly ManifestFile[], stamps: Record<string, FileStamp>): Promise<void> {
    if (bootId === undefined) return;
    const seeded: Record<string, StagedStamp> = {};
    for (const f of files) {
      const stamp = Object.hasOwn(stamps, f.path) ? stamps[f.path] : undefined;
      if (stamp && isStamp({ ...stamp, sha256: f.sha256 })) seeded[f.path] = { ino: stamp.ino, size: stamp.size, ctimeNs: stamp.ctimeNs, sha256: f.sha256 };
    }
    const contents: StagedStampsFile = { format: STAMPS_FORMAT, bootId, files: seeded };
    await writeFileAtomic(file, JSON.stringify(contents)).catch(() => {});
  }

  /**
   * Whether the file at `path` (lstat'ed as `st`) is the one an earlier run of this boot verified
   * against `file`'s digest, untouched since. Trusted, it is recorded again for the next run.
   */
  trusts(file: ManifestFile, st: BigIntStats | undefined): boolean {
    const stamp = this.verifiedStamp(file.path) as StagedStamp | undefined;
    if (stamp === undefined || stamp.sha256 !== file.sha256 || !matchesStamp(st, stamp)) return false;
    this.recorded.set(file.path, stamp);
    return true;
  }

  /** The stamp an earlier run of this boot saved for `path` once it verified it, if any. */
  verifiedStamp(path: string): FileStamp | undefined {
    const stamp = Object.hasOwn(this.earlier, path) ? this.earlier[path] : undefined;
    return isStamp(stamp) ? stamp : undefined;
  }

  /**
   * The lstat of a staged file about to be hashed, and the clock read before it (see recordStat).
   * No clock is read where nothing is recorded (no boot id).
   */
  async statBeforeHash(path: string): Promise<{ st: BigIntStats | undefined; clock: bigint | undefined }> {
    const clock = this.bootId === undefined ? undefined : await this.readings.after();
    return { st: lstatOrNone(path), clock };
  }

  /**
   * `st`: lstat of the staged file taken before its bytes were verified (a write since changes
   * its ctime), `clock` read before that lstat: a stamp of a file changed in the clock's current
   * tick is racy (a write later in that tick keeps the ctime), not recorded.
   */
  recordStat(file: ManifestFile, st: BigIntStats, clock: bigint | undefined): void {
    if (this.bootId === undefined || !settledBefore(st, clock)) return;
    this.recorded.set(file.path, { ...stampOf(st), sha256: file.sha256 });
  }

  /**
   * Records a file just verified and renamed into staging at `path`: stat'ed after a reading of
   * the clock begun after the rename (which changes the ctime), so that a write in the rename's
   * tick leaves the stamp racy rather than trusted. The stat is on this thread, as install.ts
   * stamps installed files (a just-renamed inode is cached: microseconds).
   */
  async recordPlaced(file: ManifestFile, path: string): Promise<void> {
    if (this.bootId === undefined) return;
    // A reading in the rename's own tick (13 to 39 of 2,000 renames here) leaves the stamp racy:
    // a later reading may not.
    for (let reading = 0; reading < PLACED_READINGS; reading++) {
      const clock = await this.readings.after();
      const st = lstatOrNone(path);
      if (!st?.isFile()) return;
      if (settledBefore(st, clock)) return this.recordStat(file, st, clock);
    }
  }

  /**
   * Writes what this run recorded (at the run's end, success or failure), aside and renamed,
   * with the earlier run's stamps of files this run did not reach (a run stops at its first
   * failure): each stamp stays true for this boot, and a file replaced since no longer matches.
   * Never fails: on a full disk nothing new is recorded, the earlier file stays, and the next run
   * hashes this run's files again.
   * Every stamp recorded is settled already (recordStat).
   */
  async save(): Promise<void> {
    if (this.bootId === undefined || this.recorded.size === 0) return;
    const contents: StagedStampsFile = { format: STAMPS_FORMAT, bootId: this.bootId, files: { ...this.earlier, ...Object.fromEntries(this.recorded) } };
    await writeFileAtomic(this.file, JSON.stringify(contents)).catch(() => {});
  }
}

/** lstat on this thread (see recordPlaced); undefined if it fails: the file then goes unstamped, or is not trusted. */
export function lstatOrNone(path: string): BigIntStats | undefined {
  try {
    return lstatSync(path, { bigint: true, throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function isStamp(v: unknown): v is StagedStamp {
  return isObject(v) && typeof v.ino === 'number' && typeof v.size === 'number' && typeof v.ctimeNs === 'string' && typeof v.sha256 === 'string';
}
