// CommonJS (.cts → .cjs): the code cache (src/cli/codecache.cts) runs before Node's ES module
// loader and uses this too.
import { readdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A temp file older than this was left by a process killed between its write and its rename (a
 * write of these small files takes milliseconds).
 */
export const ABANDONED_AFTER_MS = 60_000;

/**
 * Removes the temp files in `directory` whose names `matches` accepts and that are older than
 * `olderThanMs` (ABANDONED_AFTER_MS unless the caller knows no other process writes there). Judged
 * by age, not by the PID in the name: the writer may live in another PID namespace sharing the
 * directory, or its PID may have been reused since. Best effort: a file another process removes
 * first, or one that cannot be removed, is passed over. `names`: the directory's listing, when the
 * caller has just read it for its own use.
 */
export function removeAbandonedTemps(directory: string, matches: (name: string) => boolean, options: { olderThanMs?: number; now?: number; names?: readonly string[] } = {}): void {
  const { olderThanMs = ABANDONED_AFTER_MS, now = Date.now() } = options;
  let names = options.names;
  try {
    names ??= readdirSync(directory);
  } catch {
    return;
  }
  for (const name of names) {
    if (!matches(name)) continue;
    const path = join(directory, name);
    try {
      if (olderThanMs <= 0 || now - statSync(path).mtimeMs > olderThanMs) unlinkSync(path);
    } catch {
      // gone already (its writer renamed it, or another process swept it), or not ours to remove
    }
  }
}

/**
 * Creates the temp file `path` with `data`, never through something already at that name: with
 * O_EXCL the open fails on an existing file and does not follow a symbolic link, so a link planted
 * in a shared cache directory (XDG_CACHE_HOME=/tmp, say) cannot make this process write into a
 * file of its choosing. What is there (a temp file of a dead process that had this PID, or such a
 * link) is removed — the name, not what a link points to — and the file created once more.
 */
export function writeNewTemp(path: string, data: string | Buffer, mode: number): void {
  try {
    writeFileSync(path, data, { mode, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    unlinkSync(path);
    writeFileSync(path, data, { mode, flag: 'wx' });
  }
}
