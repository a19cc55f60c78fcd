import { lstatSync, readdirSync, type BigIntStats } from 'node:fs';
import { join, posix } from 'node:path';
import { settledBefore } from './fsclock.js';
import { stampOf, type FileStamp } from './install.js';
import type { Manifest } from './manifest.js';

/**
 * Entries of an installed tree that its manifest does not list (a file or a directory another
 * program or a user added under `current/`), found cheaply: every directory the manifest implies
 * is stamped like a file (inode, ctime: adding, removing or renaming an entry changes its
 * directory's ctime), and only directories whose stamp changed are listed. A round that finds
 * nothing lstats the directories (one per hundred files, typically) and lists none.
 *
 * Directory stamps live in the version's file stamps (`V@stamps.json`) under `DIR/` keys (a
 * file's path never ends in `/`; the tree's root is `./`).
 */

/** Each directory of the tree (`.` its root) → the names the manifest puts in it. */
export function expectedEntries(manifest: Manifest): Map<string, Set<string>> {
  const dirs = new Map<string, Set<string>>([['.', new Set()]]);
  for (const file of manifest.files) {
    let child = file.path;
    for (let parent = posix.dirname(child); ; child = parent, parent = posix.dirname(parent)) {
      const known = dirs.has(parent);
      if (!known) dirs.set(parent, new Set());
      dirs.get(parent)!.add(posix.basename(child));
      if (known || parent === '.') break;
    }
  }
  return dirs;
}

/** The stamps key of a directory of the tree. */
export const dirKey = (dir: string): string => `${dir}/`;

/** A directory untouched since stamped: same inode and ctime (its size is the file system's business). */
function matchesDirStamp(st: BigIntStats | undefined, stamp: FileStamp | undefined): boolean {
  return st !== undefined && stamp !== undefined && st.isDirectory() && Number(st.ino) === stamp.ino && String(st.ctimeNs) === stamp.ctimeNs;
}

/**
 * Stamps of the tree's directories whose last change is older than `clock` (read before this
 * call's stats) and that hold exactly the manifest's entries: listed after the stat, so an entry
 * added before it is seen and one added after changes the ctime. Before, a directory was stamped
 * as it was: an entry added through `current/` during a repair's switches was stamped with it,
 * and no later check listed that directory again. One listing per directory, once per install.
 */
export function stampDirectories(root: string, manifest: Manifest, clock: bigint | undefined): Record<string, FileStamp> {
  const stamps: Record<string, FileStamp> = {};
  for (const [dir, wanted] of expectedEntries(manifest)) {
    const path = join(root, dir);
    const st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
    if (st?.isDirectory() && settledBefore(st, clock) && holdsExactly(path, wanted)) stamps[dirKey(dir)] = stampOf(st);
  }
  return stamps;
}

/** Whether the directory at `path` holds the `wanted` names and no other (false if unreadable). */
function holdsExactly(path: string, wanted: Set<string>): boolean {
  try {
    const names = readdirSync(path);
    return names.length === wanted.size && names.every((name) => wanted.has(name));
  } catch {
    return false;
  }
}

export interface ExtraEntries {
  /** Paths of the entries not in the manifest, in listing order (a directory's with a trailing `/`). */
  extra: string[];
  /**
   * Directories of the manifest that are there but are no directory (a symbolic link, to a
   * directory outside the tree above all, or a file), with a trailing `/`. Paths through a link
   * resolve, so the files under one looked whole, and were stamped as the link's target's.
   */
  notDirectories: string[];
  /** New stamps of directories listed and found exact. */
  fresh: Record<string, FileStamp>;
}

/**
 * Lists the directories of the tree whose stamp changed and names what the manifest does not
 * list in them. `clock`: read once, and only if a directory changed (fsclock.ts); a directory
 * found exact is stamped again when its change is older than it. A directory holding extra
 * entries is not stamped: the next check lists it again, and finds them again.
 */
export async function findExtraEntries(root: string, manifest: Manifest, stamps: Record<string, FileStamp>, clock: () => Promise<bigint | undefined>): Promise<ExtraEntries> {
  const result: ExtraEntries = { extra: [], notDirectories: [], fresh: {} };
  const expected = expectedEntries(manifest);
  const changed = [...expected.keys()].filter((dir) => !matchesDirStamp(lstatSync(join(root, dir), { bigint: true, throwIfNoEntry: false }), stamps[dirKey(dir)]));
  if (changed.length === 0) return result;
  const now = await clock();
  for (const dir of changed) {
    const path = join(root, dir);
    // Stat'ed after the clock was read and before the listing: an entry added since changes the ctime.
    const st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
    if (st && !st.isDirectory()) result.notDirectories.push(dirKey(dir));
    if (!st?.isDirectory()) continue; // missing: its files are reported missing
    let entries;
    try {
      entries = readdirSync(path, { withFileTypes: true });
    } catch {
      continue; // unreadable: so are the files in it, reported as such
    }
    const wanted = expected.get(dir)!;
    const extra = entries.filter((e) => !wanted.has(e.name)).map((e) => posix.join(dir, e.name) + (e.isDirectory() ? '/' : ''));
    result.extra.push(...extra);
    if (extra.length === 0 && settledBefore(st, now)) result.fresh[dirKey(dir)] = stampOf(st);
  }
  return result;
}
