import { setMaxListeners } from 'node:events';
import { mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { FanoutClient, StatResult } from '../client/index.js';
import { FanoutError, isFanoutError } from '../core/errors.js';
import { pageCount } from '../core/pages.js';
import { joinFanoutPath, parseFanoutPath } from '../core/paths.js';
import { ByteBudget, copyPagesAt, writeChunks } from '../lib/transfer/index.js';
import { WholeFileWriter } from '../lib/wholefiles/index.js';

/** Pages in flight for one file (the SDK's readahead window). */
const PAGE_WINDOW = 8;
/**
 * Files copied at once out of a directory: small files cost round trips and syscalls, not bytes,
 * and their pages share batch requests (more files in flight, fuller batches).
 */
const FILES_IN_FLIGHT = 128;
/** Directories listed at once while walking a tree. */
const LISTS_IN_FLIGHT = 8;
/** Bytes of pages in flight over all the files of a tree copy. */
const BYTES_IN_FLIGHT = 64 * 1024 * 1024;

export interface CopyProgress {
  /** Called as each page lands, with its length. */
  onBytes?: (bytes: number) => void;
  signal?: AbortSignal;
}

/**
 * Copies one file out of the cluster: each verified page is written at its offset as it
 * arrives, in whatever order the window completes (no reorder buffer). Written under a
 * temporary name beside the target and renamed once complete, so a failed copy never leaves a
 * partial file under the final name.
 */
export async function copyFileTo(client: FanoutClient, file: StatResult, target: string, pageSize: number, opts: CopyProgress & { budget?: ByteBudget; window?: number; batched?: boolean } = {}): Promise<void> {
  const tmp = join(dirname(target), `.${basename(target)}.fanout-${process.pid}.tmp`);
  const handle = await open(tmp, 'w').catch((err) => rethrowLocal(err, tmp));
  try {
    await closingAfter(handle, tmp, () =>
      copyPagesAt({
        target: { writev: (buffers, position) => handle.writev(buffers, position).catch((err) => rethrowLocal(err, tmp)) },
        pages: pageCount(file.size, pageSize),
        pageSize,
        pageLength: (index) => Math.min(pageSize, file.size - index * pageSize),
        window: opts.window ?? PAGE_WINDOW,
        budget: opts.budget,
        signal: opts.signal,
        fetch: (index, signal) => followingSize(client, file, index, pageSize, signal, () => (opts.batched ? client.fetchBatchedPage(file, index, signal) : client.fetchPage(file, index, signal))),
        onWritten: (_index, bytes) => opts.onBytes?.(bytes),
        written: (chunks) => client.releasePage(chunks),
      }),
    );
    await rename(tmp, target).catch((err) => rethrowLocal(err, target));
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/**
 * Page `index` of `file` in pages of `pageSize` (what the copy places it by), fetched by `fetch`;
 * once the cluster's page size changed under the copy (its workers restarted with another: the
 * page is refused with PAGE_SIZE_MISMATCH), the same bytes read by range, which follows the new
 * size (client/pagesize.ts). A refusal the cluster does not explain fails that read too.
 */
async function followingSize(client: FanoutClient, file: StatResult, index: number, pageSize: number, signal: AbortSignal | undefined, fetch: () => Promise<Buffer[]>): Promise<Buffer[]> {
  try {
    return await fetch();
  } catch (err) {
    if (!isFanoutError(err, 'PAGE_SIZE_MISMATCH')) throw err;
    const start = index * pageSize;
    const chunks: Buffer[] = [];
    for await (const page of client.readPages(file, { start, end: Math.min(file.size, start + pageSize), signal })) chunks.push(...page);
    return chunks;
  }
}

/**
 * Copies a file into an existing destination that is not a regular file (a device such as
 * /dev/null, a FIFO): written in order, in place, as cp(1) does. A temporary name renamed over it
 * would replace the device node itself, and positional writes fail on a FIFO.
 */
export async function copyFileInto(client: FanoutClient, file: StatResult, target: string, opts: CopyProgress = {}): Promise<void> {
  const handle = await open(target, 'w').catch((err) => rethrowLocal(err, target));
  // Writes where the file is (no position): a FIFO refuses positional writes.
  const sequential = { writev: (buffers: Buffer[]) => handle.writev(buffers).catch((err) => rethrowLocal(err, target)) };
  await closingAfter(handle, target, async () => {
    for await (const page of client.readPages(file, { signal: opts.signal })) {
      const bytes = page.reduce((sum, chunk) => sum + chunk.length, 0);
      try {
        await writeChunks(sequential, page, 0, bytes);
      } finally {
        client.releasePage(page);
      }
      opts.onBytes?.(bytes);
    }
  });
}

/**
 * Runs `work` on an open file, then closes it. A failed close is reported (the last place a
 * write error can show, as on NFS) unless `work` failed first: then its error is the one thrown,
 * not the close's.
 */
export async function closingAfter(handle: FileHandle, path: string, work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (err) {
    await handle.close().catch(() => {});
    throw err;
  }
  await handle.close().catch((err) => rethrowLocal(err, path));
}

/**
 * The devices and FIFOs (or links to one) already at the targets of a tree copy, found by one
 * listing per directory rather than a stat per file: they are written into, in order, as cp(1)
 * does, never replaced by a renamed temporary.
 */
async function specialTargets(target: string, dirs: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (const dir of ['', ...dirs]) {
    for (const entry of await readdir(join(target, dir), { withFileTypes: true }).catch(() => [])) {
      const path = join(target, dir, entry.name);
      const info = entry.isSymbolicLink() ? await stat(path).catch(() => undefined) : entry;
      if (info && (info.isFIFO() || info.isCharacterDevice() || info.isBlockDevice())) found.add(path);
    }
  }
  return found;
}

/**
 * Copies a file of one page (or none) out of the cluster whole: its page fetched in a batch,
 * then written under a temporary name and renamed onto `target` by the batch writer, which
 * writes the many small files of a tree completed in the same turn in one thread-pool job.
 */
async function copyWholeFileTo(client: FanoutClient, file: StatResult, target: string, pageSize: number, writer: WholeFileWriter, opts: CopyProgress & { budget: ByteBudget }): Promise<void> {
  const tmp = join(dirname(target), `.${basename(target)}.fanout-${process.pid}.tmp`);
  const release = await opts.budget.acquire(file.size, opts.signal);
  try {
    const chunks = file.size === 0 ? [] : await followingSize(client, file, 0, pageSize, opts.signal, () => client.fetchBatchedPage(file, 0, opts.signal));
    try {
      // The writer removes the temporary name itself when a write fails.
      await writer.write({ path: target, tmp, chunks }).catch((err) => rethrowLocal(err, target));
    } finally {
      if (chunks.length > 0) client.releasePage(chunks);
    }
    opts.onBytes?.(file.size);
  } finally {
    release();
  }
}

export interface TreeFile {
  file: StatResult;
  /** Path relative to the tree's root, with "/". */
  rel: string;
}

/** The longest path under a copied directory (PATH_MAX). */
const MAX_TREE_PATH = 4096;
/**
 * The most files and directories one tree copy lists: the listing is held in memory (≈ 150 bytes
 * an entry), and a worker naming directories in a loop would grow it for ever. Copy a larger tree
 * a subdirectory at a time.
 */
export const MAX_TREE_ENTRIES = 2_000_000;

/**
 * Every file under a cluster directory, from its listings (which carry each file's size and
 * version, so no file costs a stat). Directories are listed several at once. An abort of
 * `signal` (Ctrl-C) ends the walk at the next listing, with the signal's reason.
 */
export async function listTree(client: FanoutClient, path: string, options: { maxEntries?: number; signal?: AbortSignal } = {}): Promise<{ files: TreeFile[]; dirs: string[] }> {
  const { maxEntries = MAX_TREE_ENTRIES, signal } = options;
  const root = parseFanoutPath(path);
  const files: TreeFile[] = [];
  const dirs: string[] = [];
  const queue: string[] = [''];
  let active = 0;
  await new Promise<void>((resolve, reject) => {
    let failed = false;
    const pump = () => {
      if (failed) return;
      if (signal?.aborted) {
        failed = true;
        return reject(signal.reason);
      }
      if (queue.length === 0 && active === 0) return resolve();
      while (queue.length > 0 && active < LISTS_IN_FLIGHT) {
        const rel = queue.shift()!;
        active++;
        const inner = [root.path, rel].filter((p) => p !== '').join('/');
        const fail = (err: unknown) => {
          failed = true;
          reject(err);
        };
        const visit = async () => {
          for (const entry of await client.list(joinFanoutPath(root.mount, inner))) {
            const childRel = rel ? `${rel}/${entry.name}` : entry.name;
            // A listing that never ends (a worker naming directories in a loop) fails here, not never.
            if (childRel.length > MAX_TREE_PATH) throw new FanoutError('INVALID_PATH', `${joinFanoutPath(root.mount, inner)}: a path under the copied directory is longer than ${MAX_TREE_PATH} characters`);
            if (files.length + dirs.length >= maxEntries) throw new FanoutError('INVALID_ARGUMENT', `${path} holds more than ${maxEntries} files and directories: copy it a subdirectory at a time`);
            const childInner = inner ? `${inner}/${entry.name}` : entry.name;
            if (entry.type === 'dir') {
              dirs.push(childRel);
              queue.push(childRel);
            } else if (entry.size !== undefined && entry.version !== undefined && entry.mtimeMs !== undefined) {
              files.push({ rel: childRel, file: { mount: root.mount, path: childInner, size: entry.size, version: entry.version, mtimeMs: entry.mtimeMs } });
            } else {
              files.push({ rel: childRel, file: await client.stat(joinFanoutPath(root.mount, childInner)) });
            }
          }
        };
        visit().then(() => {
          active--;
          pump();
        }, fail);
      }
    };
    pump();
  });
  return { files, dirs };
}

/**
 * Copies a listed tree into `target` (made if missing): directories first, then the files,
 * FILES_IN_FLIGHT at a time under one budget of bytes in flight; files of one page are written
 * whole, many to a thread-pool job; a device or FIFO already at a file's place is written into.
 * The first failure stops the copy; files already copied stay (as with cp -r), a file being copied never appears.
 */
export async function copyTreeTo(client: FanoutClient, tree: { files: TreeFile[]; dirs: string[] }, target: string, pageSize: number, opts: CopyProgress = {}): Promise<void> {
  await mkdir(target, { recursive: true }).catch((err) => rethrowLocal(err, target));
  for (const dir of tree.dirs) await mkdir(join(target, dir), { recursive: true }).catch((err) => rethrowLocal(err, join(target, dir)));
  const specials = await specialTargets(target, tree.dirs);
  const budget = new ByteBudget(BYTES_IN_FLIGHT);
  const stop = new AbortController();
  setMaxListeners(0, stop.signal); // one listener per file in flight (FILES_IN_FLIGHT), removed when it ends
  const onAbort = () => stop.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const writer = new WholeFileWriter();
  let next = 0;
  const worker = async () => {
    while (next < tree.files.length && !stop.signal.aborted) {
      const { file, rel } = tree.files[next++]!;
      const path = join(target, rel);
      const copied = specials.has(path)
        ? copyFileInto(client, file, path, { signal: stop.signal, onBytes: opts.onBytes })
        : file.size <= pageSize
          ? copyWholeFileTo(client, file, path, pageSize, writer, { budget, signal: stop.signal, onBytes: opts.onBytes })
          : copyFileTo(client, file, path, pageSize, { budget, signal: stop.signal, onBytes: opts.onBytes, window: 4, batched: true });
      await copied.catch((err) => {
        stop.abort(err);
        throw err;
      });
    }
  };
  try {
    const results = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(FILES_IN_FLIGHT, tree.files.length)) }, worker));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof FanoutError && r.reason.code === 'ABORTED'));
    if (failed) throw failed.reason;
    if (stop.signal.aborted) throw stop.signal.reason;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

function rethrowLocal(err: unknown, path: string): never {
  if (err instanceof FanoutError) throw err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') throw new FanoutError('DISK_FULL', `no space left writing ${path}`, { cause: err });
  throw new FanoutError('INTERNAL', `cannot write ${path}: ${(err as Error).message}`, { cause: err });
}
