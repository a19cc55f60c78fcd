import { createHash } from 'node:crypto';
import { createReadStream, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { settledBefore } from './fsclock.js';
import { inSlices, matchesStamp, stampOf, type FileStamp, type ReleaseDir } from './install.js';
import type { Manifest, ManifestFile } from './manifest.js';
import { findExtraEntries } from './treeextras.js';

/** A file of an installed version whose bytes are no longer the manifest's, or an entry the manifest does not list. */
export interface DamagedFile {
  /** A directory's with a trailing `/`. */
  path: string;
  /**
   * missing (or no longer a regular file), the wrong size, other bytes, unreadable, not in the
   * manifest, or (a directory's) no directory: a link or a file in its place.
   */
  reason: 'missing' | 'size' | 'content' | 'unreadable' | 'extra' | 'not-directory';
}

export interface DamageCheck {
  damaged: DamagedFile[];
  /** Files changed since verified (chmod, a rewrite with the same bytes, a link added or removed) whose bytes are intact. */
  touched: string[];
  /** Bytes read to tell touched from damaged. */
  bytesRehashed: number;
}

/**
 * Checks an installed version's files against the manifest, cheaply: one lstat per file
 * against its stamp (inode, size, ctime: any write, truncate, chmod or replacement changes one
 * of them), and only the files whose stamp no longer matches are read and hashed again. Those
 * found intact are stamped again, so the next check does not read them. Entries the manifest
 * does not list are looked for in the directories changed since stamped (treeextras.ts).
 */
export async function checkInstalled(dir: ReleaseDir, manifest: Manifest): Promise<DamageCheck> {
  const stamps = await dir.stampsOf(manifest.version);
  const root = dir.versionDir(manifest.version);
  // Read once, only when something changed (a round that finds nothing waits for nothing). A new
  // stamp needs the clock read before its stat (fsclock.ts), so changed entries are stat'ed again.
  let reading: Promise<bigint | undefined> | undefined;
  const clock = () => (reading ??= dir.clock.pastNow());
  // The tree is what the manifest says: an entry added to it (a file, a directory) is damage too,
  // and so is a directory replaced by a link: the files under it are not looked at (their paths
  // resolve through the link, to bytes outside the tree), the repair stages them afresh.
  const extras = await findExtraEntries(root, manifest, stamps, clock);
  const linkedAway = extras.notDirectories;
  const changed: ManifestFile[] = [];
  await inSlices(manifest.files, (file) => {
    if (linkedAway.some((d) => d === './' || file.path.startsWith(d))) return;
    if (!matchesStamp(lstatSync(join(root, file.path), { bigint: true, throwIfNoEntry: false }), stamps[file.path])) changed.push(file);
  });
  const check: DamageCheck = { damaged: linkedAway.map((path) => ({ path, reason: 'not-directory' as const })), touched: [], bytesRehashed: 0 };
  const fresh: Record<string, FileStamp> = {};
  const now = changed.length > 0 ? await clock() : undefined;
  for (const file of changed) {
    const path = join(root, file.path);
    const st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
    if (!st?.isFile()) check.damaged.push({ path: file.path, reason: 'missing' });
    else if (Number(st.size) !== file.size) check.damaged.push({ path: file.path, reason: 'size' });
    else {
      const digest = await sha256Of(path, (bytes) => (check.bytesRehashed += bytes));
      if (digest === undefined) check.damaged.push({ path: file.path, reason: 'unreadable' });
      else if (digest !== file.sha256) check.damaged.push({ path: file.path, reason: 'content' });
      else {
        check.touched.push(file.path);
        // Stamped only if nothing changed it while it was read (a write changes the ctime), and
        // if its last change is older than the clock (else a write in that tick would go unseen).
        const after = lstatSync(path, { bigint: true, throwIfNoEntry: false });
        const stamp = stampOf(st);
        if (matchesStamp(after, stamp) && settledBefore(st, now)) fresh[file.path] = stamp;
      }
    }
  }
  check.damaged.push(...extras.extra.map((path) => ({ path, reason: 'extra' as const })));
  Object.assign(fresh, extras.fresh);
  if (Object.keys(fresh).length > 0) await dir.restamp(manifest.version, fresh);
  return check;
}

const DESCRIBED: Partial<Record<DamagedFile['reason'], string>> = { extra: 'not in the manifest', 'not-directory': 'not a directory (a link or a file)' };

/** `2 file(s) of v1 damaged (a.bin: content, sub/b.bin: missing)`: a few paths and the count. */
export function describeDamage(version: string, damaged: readonly DamagedFile[], shown = 3): string {
  const named = damaged.slice(0, shown).map((d) => `${d.path}: ${DESCRIBED[d.reason] ?? d.reason}`);
  if (damaged.length > shown) named.push(`${damaged.length - shown} more`);
  return `${damaged.length} file(s) of ${version} damaged (${named.join(', ')})`;
}

/** The file's SHA-256, or undefined if it cannot be read (EACCES after a chmod: its readers fail too). */
async function sha256Of(path: string, onRead: (bytes: number) => void): Promise<string | undefined> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
      hash.update(chunk as Buffer);
      onRead((chunk as Buffer).length);
    }
  } catch {
    return undefined;
  }
  return hash.digest('hex');
}
