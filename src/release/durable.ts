import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import { FanoutError } from '../core/errors.js';
import { syncFileSystem as syncFileSystemNative } from '../lib/wholefiles/index.js';

/** How long one syncfs of the staging file system may take before the stage fails. */
const SYNCFS_DEADLINE_MS = 10 * 60 * 1000;
/** fdatasyncs in flight when syncfs is not available. */
const FILE_SYNC_CONCURRENCY = 32;

/**
 * Makes every file staged under `root` durable at once, before the tree is installed under its
 * final name. A fdatasync per file (each one a journal commit on ext4) halved the staging rate of
 * 2,000 files of 64 KiB on this machine (warm: 2.96 s without it, 6.02 s with, median of 3
 * interleaved runs); one syncfs(2) of the file system (`sync -f`) does the same in one go.
 * syncfs(2) is called by the files addon when it is built (no process to fork: `sync -f` from a
 * sync process with a large heap cost 50–250 ms of CPU), else by `sync -f`.
 * Without either (no `sync -f`, or it cannot run) every file is fdatasync'd, many at a time.
 *
 * Safe because nothing in staging is trusted before this returns: a crash leaves staged files
 * that may be empty or torn, and the next run re-hashes every file it finds in staging (the
 * stamps that spare a resumed run the hashing are those of this boot only, stagestamps.ts).
 */
export async function makeDurable(root: string, files: string[], signal?: AbortSignal, syncCommand = 'sync'): Promise<void> {
  const synced = (syncCommand === 'sync' && (await syncNative(root, signal))) || (await syncFileSystem(syncCommand, root, signal));
  if (synced) return;
  let next = 0;
  const syncer = async () => {
    while (next < files.length) {
      if (signal?.aborted) throw new FanoutError('ABORTED', 'staging aborted');
      const file = files[next++]!;
      const handle = await open(file, 'r');
      try {
        await handle.datasync();
      } finally {
        await handle.close();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(FILE_SYNC_CONCURRENCY, files.length) }, syncer));
}

/** syncfs(2) by the addon, under the same deadline; false without the addon. */
async function syncNative(dir: string, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) throw new FanoutError('ABORTED', 'staging aborted');
  let timer: NodeJS.Timeout | undefined;
  // A flush stuck past its deadline fails the stage (its pool thread is left to finish).
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new FanoutError('INTERNAL', `could not flush the staged files to disk within ${SYNCFS_DEADLINE_MS / 1000} s`)), SYNCFS_DEADLINE_MS);
    timer.unref();
  });
  try {
    return await Promise.race([syncFileSystemNative(dir), deadline]);
  } catch (err) {
    if (err instanceof FanoutError) throw err;
    throw new FanoutError('INTERNAL', `could not flush the staged files to disk: ${(err as Error).message}`, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * syncfs(2) of the file system holding `dir`, through coreutils' `sync -f` (Node has no binding).
 * Resolves false if it could not be run at all (the caller syncs file by file); rejects if it ran
 * and failed (a write-back error: the data is not safe) or passed its deadline.
 */
function syncFileSystem(command: string, dir: string, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve, reject) => {
    execFile(command, ['-f', dir], { timeout: SYNCFS_DEADLINE_MS, signal }, (err, _stdout, stderr) => {
      if (!err) return resolve(true);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EACCES') return resolve(false); // no `sync` to run
      if (signal?.aborted) return reject(new FanoutError('ABORTED', 'staging aborted'));
      // `sync` without -f support (old coreutils, busybox) says so on stderr: fall back.
      if (/invalid option|unrecognized option/i.test(String(stderr))) return resolve(false);
      reject(new FanoutError('INTERNAL', `could not flush the staged files to disk: ${String(stderr).trim() || (err as Error).message}`, { cause: err }));
    });
  });
}
