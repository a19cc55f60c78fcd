import { lstatSync, type BigIntStats } from 'node:fs';
import { lstat, mkdir, open, readFile, readdir, readlink, rename, rm, stat, symlink, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { FanoutError } from '../core/errors.js';
import { readJsonState, writeFileAtomic, type CorruptStateFile } from '../lib/statefile/index.js';
import { lockDir } from '../lib/dirlock/index.js';
import { FileSystemClock, settledBefore } from './fsclock.js';
import { matchesStamp, stampOf, STAMPS_FORMAT, type FileStamp } from './filestamp.js';
import { parseManifest, serializeManifest, type Manifest } from './manifest.js';
import { readBootId, StagedStamps } from './stagestamps.js';
import { findExtraEntries, stampDirectories } from './treeextras.js';

export { matchesStamp, stampOf, type FileStamp } from './filestamp.js';

/** Installed files stat'ed per turn of the event loop. */
const STAMP_SLICE = 256;

/**
 * A release directory on a serving host:
 *   DIR/current              symlink → versions/V (what the service reads; switched atomically)
 *   DIR/versions/V/          installed, verified versions (current + up to --keep older ones)
 *   DIR/.staging-V/          a version being downloaded; never pointed to by current
 *   DIR/.parts-V/            files being written (renamed into staging once verified)
 *   DIR/.staging-V@stamps.json  stamps of files verified into staging in this boot (stagestamps.ts)
 *   DIR/.manifests/V.json    manifests of installed versions (local dedup reads them)
 *   DIR/.history.json        installed versions, most recently switched to first
 *   DIR/.stamp-clock         touched to read the file system's clock (fsclock.ts)
 */
export class ReleaseDir {
  /** What file stamps are taken against: a stamp of a file changed in the clock's current tick is racy, left out. */
  clock: FileSystemClock;

  /** `onCorrupt`: a state file (history, stamps) was unreadable and moved aside. */
  /** Versions whose untrusted stamps were logged (once each). */
  private readonly untrustedNoted = new Set<string>();

  /** `log`: notes for the operator (stamps of an older format, hashed again). */
  constructor(
    readonly dir: string,
    private readonly onCorrupt?: (report: CorruptStateFile) => void,
    private readonly log?: (line: string) => void,
  ) {
    this.clock = new FileSystemClock(join(dir, '.stamp-clock'));
  }

  get current(): string {
    return join(this.dir, 'current');
  }
  versionDir(version: string): string {
    return join(this.dir, 'versions', version);
  }
  stagingDir(version: string): string {
    return join(this.dir, `.staging-${version}`);
  }
  partsDir(version: string): string {
    return join(this.dir, `.parts-${version}`);
  }
  /** Beside staging, not in it (`@`: never a version's name, see stampFile). */
  stagedStampFile(version: string): string {
    return join(this.dir, `.staging-${version}@stamps.json`);
  }
  manifestFile(version: string): string {
    return join(this.dir, '.manifests', `${version}.json`);
  }
  /** A repair of the current version under way (repair.ts): `.repair-V/V`, so `current`'s target still ends in V. */
  repairDir(version: string): string {
    return join(this.dir, `.repair-${version}`);
  }

  /** Takes the directory for this process (one agent per directory, see lib/dirlock). Returns its release. */
  lock(): Promise<() => Promise<void>> {
    return lockDir(this.dir);
  }

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'versions'), { recursive: true });
    await mkdir(join(this.dir, '.manifests'), { recursive: true });
    // A version is staged in DIR and renamed into DIR/versions: on another file system (a mount
    // there, a link to another disk) the rename fails, found only after the whole download, at
    // every round (found by a fault hunt).
    const [dir, versions] = await Promise.all([stat(this.dir), stat(join(this.dir, 'versions'))]);
    if (dir.dev !== versions.dev) {
      throw new FanoutError('INVALID_CONFIG', `${join(this.dir, 'versions')} is on another file system than ${this.dir}: versions are staged in ${this.dir} and renamed into it; put both on one file system`);
    }
  }

  /** The version `current` points to, or null before the first switch. */
  async currentVersion(): Promise<string | null> {
    try {
      return basename(await readlink(this.current));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      if ((err as NodeJS.ErrnoException).code === 'EINVAL') {
        throw new FanoutError('INVALID_CONFIG', `${this.current} is not a symbolic link: fanout sync keeps it as a link to versions/VERSION, and replaces nothing else; move it away`);
      }
      throw err;
    }
  }

  async installed(): Promise<string[]> {
    return readdir(join(this.dir, 'versions')).catch(() => []);
  }

  async manifestOf(version: string): Promise<Manifest | undefined> {
    try {
      return parseManifest(await readFile(this.manifestFile(version)));
    } catch {
      return undefined;
    }
  }

  /**
   * Moves a fully verified staging tree into versions/ (one rename) and keeps its manifest. The
   * manifest is written last: an installed version is one with a manifest, so a crash part-way
   * leaves a directory the next round stages again, never a version taken for whole.
   */
  async install(manifest: Manifest): Promise<void> {
    const target = this.versionDir(manifest.version);
    await rm(this.manifestFile(manifest.version), { force: true });
    await rm(target, { recursive: true, force: true });
    // Read before the tree moves: a rename in the middle of it would read nothing.
    const verified = await StagedStamps.load(this.stagedStampFile(manifest.version), await readBootId(), this.clock);
    await rename(this.stagingDir(manifest.version), target);
    let stamped: Record<string, FileStamp>;
    try {
      await rm(this.partsDir(manifest.version), { recursive: true, force: true });
      await fsyncDir(join(this.dir, 'versions'));
      await writeAtomic(this.manifestFile(manifest.version), serializeManifest(manifest));
      // A file with no stamp of its verification (racy at its rename, no boot id) is not stamped:
      // a write since (through `current/` to a linked inode) would be stamped with it.
      stamped = await this.stampInstalled(manifest, (path, st) => {
        const staged = verified.verifiedStamp(path);
        return staged !== undefined && matchesStamp(st, staged);
      });
    } catch (err) {
      // The verified tree goes back to staging (a full disk at the manifest's write): left in
      // versions/ without its manifest it was staged again from nothing beside itself, and the
      // disk stayed full for good (found by a fault hunt).
      await rm(this.manifestFile(manifest.version), { force: true }).catch(() => {});
      await rename(target, this.stagingDir(manifest.version)).catch(() => {});
      throw err;
    }
    // Installed, the version has stamps of its own (a leftover goes with the next prune).
    await rm(this.stagedStampFile(manifest.version), { force: true }).catch(() => {});
    // A cache: on failure the kept versions' shared files are hashed at a rollback, as before.
    await this.carryStamps(manifest, stamped).catch(() => {});
  }

  /**
   * An installed tree without its manifest (an install or a prune cut short by a kill) goes back
   * to staging, where staging keeps what of it verifies instead of fetching it all again.
   */
  async reclaimUnfinished(version: string): Promise<void> {
    const tree = this.versionDir(version);
    if ((await this.manifestOf(version)) || !(await exists(tree))) return;
    if (await exists(this.stagingDir(version))) await rm(tree, { recursive: true, force: true });
    else await rename(tree, this.stagingDir(version));
  }

  /**
   * Staging and parts directories of versions other than `version`, and their staged stamps
   * (left by a round that moved on, or was killed).
   */
  async dropOtherStaging(version?: string): Promise<void> {
    for (const name of await readdir(this.dir)) {
      const staged = stagedVersionOf(name);
      if (staged !== undefined && staged !== version) await rm(join(this.dir, name), { recursive: true, force: true });
      if (name.startsWith('.current-')) await rm(join(this.dir, name), { force: true });
    }
  }

  /**
   * Stamps every file of an installed version as it is now (right after it was verified).
   * `unchanged`: whether a file is as it was verified (install: it still matches the stamp staging
   * took as it verified it; a repair: its data as before `current` showed it). One that is not was
   * changed since, and is left unstamped (hashed at its next check): a file hard-linked from the
   * current version is one inode with the file the service reads, and a write through `current/`
   * would otherwise be stamped as verified.
   */
  async stampInstalled(manifest: Manifest, unchanged: (path: string, st: BigIntStats) => boolean): Promise<Record<string, FileStamp>> {
    const target = this.versionDir(manifest.version);
    // What each verified file looked like once installed: any write changes its ctime.
    // Stat'ed on this thread, a slice at a time: a stat of a just-written file's cached inode takes
    // microseconds, less than the thread-pool hand-off an async stat costs (thousands of small
    // files: 0.1 ms of CPU each through the pool), and the event loop still turns between slices.
    // Stat'ed once the file system's clock moved past the renames and links that made the tree:
    // a stamp of a file changed in the clock's current tick would miss a write in that same tick
    // (fsclock.ts).
    const clock = await this.clock.pastNow();
    const snapshot: Record<string, FileStamp> = {};
    await inSlices(manifest.files, (file) => {
      // lstat: a file replaced by a link (during a repair, through `current/`) is not stamped.
      const st = lstatSync(join(target, file.path), { bigint: true });
      if (st.isFile() && settledBefore(st, clock) && unchanged(file.path, st)) snapshot[file.path] = stampOf(st);
    });
    // Its directories too: a check lists only those changed since, for entries not in the manifest.
    Object.assign(snapshot, stampDirectories(target, manifest, clock));
    await this.writeStamps(manifest.version, snapshot);
    return snapshot;
  }

  /**
   * Files a version shares with kept versions (hard-linked into its staging: one inode) had their
   * ctime changed by the link, so the kept versions' stamps no longer matched: a rollback to one
   * staged it again and read all of it (found while testing racy stamps). A kept file that is now
   * the inode of a file just stamped, with the same digest in its manifest, gets that stamp: it
   * holds bytes verified against that digest. One lstat per kept file, once per install.
   */
  private async carryStamps(manifest: Manifest, stamped: Record<string, FileStamp>): Promise<void> {
    const byInode = new Map<number, { stamp: FileStamp; sha256: string }>();
    for (const file of manifest.files) {
      const stamp = stamped[file.path];
      if (stamp) byInode.set(stamp.ino, { stamp, sha256: file.sha256 });
    }
    for (const version of byInode.size > 0 ? await this.installed() : []) {
      const kept = version === manifest.version ? undefined : await this.manifestOf(version);
      if (!kept) continue;
      const stamps = await this.stampsOf(version);
      const root = this.versionDir(version);
      const fresh: Record<string, FileStamp> = {};
      await inSlices(kept.files, (file) => {
        const st = lstatSync(join(root, file.path), { bigint: true, throwIfNoEntry: false });
        if (!st || matchesStamp(st, stamps[file.path])) return;
        const shared = byInode.get(Number(st.ino));
        if (shared?.sha256 === file.sha256 && matchesStamp(st, shared.stamp)) fresh[file.path] = shared.stamp;
      });
      if (Object.keys(fresh).length > 0) await this.restamp(version, fresh);
    }
  }

  /** Replaces the stamps of some files of an installed version (re-hashed and found intact). */
  async restamp(version: string, fresh: Record<string, FileStamp>): Promise<void> {
    await this.writeStamps(version, { ...(await this.stampsOf(version)), ...fresh });
  }

  private async writeStamps(version: string, files: Record<string, FileStamp>): Promise<void> {
    await writeAtomic(this.stampFile(version), Buffer.from(JSON.stringify({ format: STAMPS_FORMAT, files })));
  }

  /**
   * `V@stamps.json`: a version name cannot hold `@`, so this is never another version's manifest
   * (as `V.stamps.json` was the manifest of a version named `V.stamps`, found by a fault hunt).
   */
  stampFile(version: string): string {
    return join(this.dir, '.manifests', `${version}@stamps.json`);
  }

  /**
   * Stamps of an installed version's files (and directories), recorded right after they were
   * verified. Stamps of another format (an older build's: STAMPS_FORMAT, or `V.stamps.json`, where
   * builds before `V@stamps.json` kept them) are not trusted: none is returned, so the next check
   * hashes every file once and stamps it again, and a rollback to a kept version stages it again.
   */
  async stampsOf(version: string): Promise<Record<string, FileStamp>> {
    const stamps = await this.readState(this.stampFile(version), (v) => {
      if (!isObject(v)) throw new Error('not an object of file stamps');
      if (v.format !== STAMPS_FORMAT || !isObject(v.files)) return undefined;
      return v.files as Record<string, FileStamp>;
    });
    if (stamps) return stamps;
    if (!this.untrustedNoted.has(version) && (await exists(this.stampFile(version)))) {
      this.untrustedNoted.add(version);
      this.log?.(`file stamps of ${version} in ${this.stampFile(version)} are of an older format: not trusted; its files are hashed once and stamped again`);
    }
    return {};
  }

  /**
   * Files of an installed version that changed since they were verified: their inode, size or
   * ctime differ from the stamps (any write changes the ctime), or they are gone or unstamped.
   * Stat'ed on this thread a slice at a time, as the stamps were taken.
   */
  async changedFiles(manifest: Manifest): Promise<string[]> {
    const stamps = await this.stampsOf(manifest.version);
    const root = this.versionDir(manifest.version);
    const changed: string[] = [];
    await inSlices(manifest.files, (file) => {
      if (!matchesStamp(lstatSync(join(root, file.path), { bigint: true, throwIfNoEntry: false }), stamps[file.path])) changed.push(file.path);
    });
    return changed;
  }

  /**
   * What changed in an installed version since it was verified: its files (changedFiles) and the
   * entries its manifest does not list, looked for in the directories changed since stamped
   * (treeextras.ts; those found exact are stamped again). A rollback checked files alone: a file
   * or directory added to a kept version went live with the switch and its hook, and only the
   * next round's check found it and repaired it (a second hook).
   */
  async changedEntries(manifest: Manifest): Promise<{ files: string[]; extra: string[]; notDirectories: string[] }> {
    const files = await this.changedFiles(manifest);
    const stamps = await this.stampsOf(manifest.version);
    const { extra, notDirectories, fresh } = await findExtraEntries(this.versionDir(manifest.version), manifest, stamps, () => this.clock.pastNow());
    if (Object.keys(fresh).length > 0) await this.restamp(manifest.version, fresh);
    return { files, extra, notDirectories };
  }

  /**
   * Takes an installed version back to staging (its files changed since they were verified):
   * its manifest first, so it is not taken for installed meanwhile; staging then keeps the files
   * that still verify and fetches the others. Its files' stamps go with it as staged stamps, so
   * staging hashes only the changed files (before, a rollback to a version with one file edited
   * read the whole version again).
   */
  async returnToStaging(version: string): Promise<void> {
    const manifest = await this.manifestOf(version);
    const stamps = await this.stampsOf(version);
    await rm(this.manifestFile(version), { force: true });
    await rm(this.stampFile(version), { force: true });
    await rm(this.stagingDir(version), { recursive: true, force: true });
    await rm(this.stagedStampFile(version), { force: true });
    if (manifest) await StagedStamps.seed(this.stagedStampFile(version), await readBootId(), manifest.files, stamps);
    await rename(this.versionDir(version), this.stagingDir(version));
  }

  /**
   * Points `current` at an installed version atomically: a new symlink under a temporary name,
   * renamed over the old one. A reader resolving `current` sees the old tree or the new one,
   * never a mix and never nothing. Once this returns the switch stands; the history is recorded
   * apart (recordSwitch), so that its failure is not taken for the switch's.
   */
  async switchTo(version: string): Promise<void> {
    if ((await this.installed()).indexOf(version) === -1) throw new FanoutError('INTERNAL', `version ${version} is not installed in ${this.dir}`);
    await this.pointCurrentAt(join('versions', version));
  }

  /** `current` → `target` (relative to DIR), by the rename of a new link over it: never a moment without one. */
  async pointCurrentAt(target: string): Promise<void> {
    const tmp = join(this.dir, `.current-${process.pid}-${Date.now()}`);
    await symlink(target, tmp);
    try {
      await rename(tmp, this.current);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
    await fsyncDir(this.dir);
  }

  /**
   * Records `version` as the most recently switched to, and `previous` (what `current` pointed at
   * before) right after it: prune keeps the newest of the history. A round killed between a switch
   * and its record left the version it switched to out of the history, and the next switch then
   * pruned that version, the one a rollback wants, while older ones were kept.
   */
  async recordSwitch(version: string, previous?: string | null): Promise<void> {
    const head = previous && previous !== version ? [version, previous] : [version];
    const history = [...head, ...(await this.history()).filter((v) => !head.includes(v))];
    await writeAtomic(join(this.dir, '.history.json'), Buffer.from(JSON.stringify(history)));
  }

  /**
   * The switch whose hook has not run yet: written before `current` moves and removed once the
   * hook ran, so a crash or kill in between has the next round run it.
   */
  async pendingHook(): Promise<PendingHook | undefined> {
    return this.readState(this.pendingHookFile, (v) => {
      if (!isObject(v) || typeof v.version !== 'string' || (v.previous !== null && typeof v.previous !== 'string')) throw new Error('not a pending switch');
      return { version: v.version, previous: v.previous as string | null };
    });
  }

  async setPendingHook(pending: PendingHook | undefined): Promise<void> {
    if (pending) await writeAtomic(this.pendingHookFile, Buffer.from(JSON.stringify(pending)));
    else await rm(this.pendingHookFile, { force: true });
  }

  private get pendingHookFile(): string {
    return join(this.dir, '.hook-pending.json');
  }

  /** Deletes installed versions beyond the current one and `keep` older ones, and stale staging. */
  async prune(keep: number, keepStaging?: string): Promise<string[]> {
    const current = await this.currentVersion();
    const history = (await this.history()).filter((v) => v !== current);
    const wanted = new Set([...(current ? [current] : []), ...history.slice(0, keep)]);
    const removed: string[] = [];
    for (const version of await this.installed()) {
      if (wanted.has(version)) continue;
      // The manifest first: a version without one is not taken for installed, so a kill while its
      // files are being deleted never leaves a partial tree that a rollback would switch to.
      await rm(this.manifestFile(version), { force: true });
      await rm(this.stampFile(version), { force: true });
      await rm(this.versionDir(version), { recursive: true, force: true });
      removed.push(version);
    }
    await this.dropOtherStaging(keepStaging);
    await writeAtomic(join(this.dir, '.history.json'), Buffer.from(JSON.stringify((await this.history()).filter((v) => wanted.has(v)))));
    return removed;
  }

  private async history(): Promise<string[]> {
    const history = await this.readState(join(this.dir, '.history.json'), (v) => {
      if (!Array.isArray(v)) throw new Error('not a list of versions');
      return v.filter((x): x is string => typeof x === 'string');
    });
    return history ?? [];
  }

  /** A missing file is empty state; an unreadable one is moved aside, reported, and empty too. */
  private async readState<T>(file: string, parse: (value: unknown) => T): Promise<T | undefined> {
    try {
      return await readJsonState(file, parse, { onCorrupt: this.onCorrupt });
    } catch {
      return undefined;
    }
  }
}

/** A switch whose on-switch hook is still to run. */
export interface PendingHook {
  version: string;
  previous: string | null;
}

/**
 * The version a staging leftover belongs to: `.staging-V`, `.parts-V`, `.staging-V@stamps.json`
 * and the temp files of that one's writes (`..staging-V@stamps.json.PID.N.tmp`, lib/statefile).
 */
function stagedVersionOf(name: string): string | undefined {
  const stamps = /^\.\.?staging-([^@]+)@stamps\.json(?:\.\d+\.\d+\.tmp)?$/.exec(name);
  return (stamps ?? /^\.(?:staging|parts)-(.+)$/.exec(name))?.[1];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `each` over `items` on this thread, STAMP_SLICE at a time, the event loop turning between slices. */
export async function inSlices<T>(items: readonly T[], each: (item: T) => void): Promise<void> {
  for (let at = 0; at < items.length; at += STAMP_SLICE) {
    if (at > 0) await new Promise((resolve) => setImmediate(resolve));
    for (const item of items.slice(at, at + STAMP_SLICE)) each(item);
  }
}

/** temp + fsync + rename (lib/statefile): a crash or a full disk never leaves a torn state file. */
export async function writeAtomic(file: string, data: Buffer): Promise<void> {
  await writeFileAtomic(file, data);
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
