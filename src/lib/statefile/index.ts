import { randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { FanoutError } from '../../core/errors.js';
import { basename, dirname, join } from 'node:path';
import { removeAbandonedTemps } from './tempfiles.cjs';

/**
 * Small JSON state files (pins and TTLs, release history, manifests) written so that a crash or
 * a full disk never leaves a torn or empty file under the real name, and read so that a file
 * that is torn anyway (written by an older version, edited by hand, a disk fault) costs a log
 * line, not a worker that refuses to start.
 */

let tmpCounter = 0;
/**
 * Marks this process's temp files, with its pid: a pid alone is not the process. A worker that is
 * PID 1 of its container (or any process whose pid comes again after a restart) met the temp file
 * its killed predecessor left under the same pid: kept as its own, for ever, and `wx` refused the
 * new write of that name (EEXIST: a pin refused with INTERNAL, found by a fault hunt).
 */
const processTag = `${process.pid}.${randomBytes(6).toString('hex')}`;

/** Errno codes that mean "no room": the file system is full, or the user's quota is. */
export function isDiskFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** Errno codes that mean "may not write here": a read-only file system, or permissions. */
export function isNotWritable(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'EROFS' || code === 'EACCES' || code === 'EPERM';
}

/** Creates `file` (it must not exist) with `data`, flushed to disk before this returns. */
export async function writeNewSynced(file: string, data: string | Buffer): Promise<void> {
  const handle = await open(file, 'wx');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * temp file beside the target + fsync + rename + fsync of the directory: readers see the old
 * content or the new, and after a crash the rename is durable. The temp file is removed on any
 * failure, so a full disk leaves neither a 0-byte nor a partial file behind.
 */
export async function writeFileAtomic(file: string, data: string | Buffer): Promise<void> {
  const tmp = join(dirname(file), `${tempPrefix(file)}${processTag}.${tmpCounter++}.tmp`);
  try {
    await writeNewSynced(tmp, data);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dirname(file)).catch(() => {});
}

function tempPrefix(file: string): string {
  return `.${basename(file)}.`;
}

/** This process's temp files of `file` start with this (one may be being written now). */
export function ownTempPrefix(file: string): string {
  return `${tempPrefix(file)}${processTag}.`;
}

/**
 * Temp files of `file` left by a process killed mid-write (never this process's own), whatever
 * their age.
 */
function removeStaleTemps(file: string): void {
  const prefix = tempPrefix(file);
  const ours = ownTempPrefix(file);
  removeAbandonedTemps(dirname(file), (name) => name.startsWith(prefix) && name.endsWith('.tmp') && !name.startsWith(ours), { olderThanMs: 0 });
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export interface CorruptStateFile {
  file: string;
  /** Where the unreadable file was moved, or undefined if it could not be moved. */
  movedTo: string | undefined;
  reason: string;
}

/**
 * Reads and parses a JSON state file. Missing → undefined. Unparseable (or rejected by
 * `parse`) → moved aside to `<file>.corrupt-<UTC timestamp>` so an operator can look at it,
 * reported through `onCorrupt`, and undefined is returned: the caller starts from empty state.
 * Read errors other than ENOENT (EACCES, EIO, EISDIR) are thrown as INVALID_CONFIG naming the file:
 * those are not the file's content.
 * Temp files left by an earlier process killed mid-write are removed.
 */
export async function readJsonState<T>(
  file: string,
  parse: (value: unknown) => T,
  options: { now?: () => number; onCorrupt?: (report: CorruptStateFile) => void } = {},
): Promise<T | undefined> {
  removeStaleTemps(file);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    // Named: "EISDIR: illegal operation on a directory, read" alone did not say which file.
    throw new FanoutError('INVALID_CONFIG', `cannot read the state file ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return parse(JSON.parse(text));
  } catch (err) {
    const stamp = new Date((options.now ?? Date.now)()).toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
    let movedTo: string | undefined = `${file}.corrupt-${stamp}`;
    try {
      await rename(file, movedTo);
    } catch {
      movedTo = undefined;
    }
    options.onCorrupt?.({ file, movedTo, reason: (err as Error).message.slice(0, 300) });
    return undefined;
  }
}
