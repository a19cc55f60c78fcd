import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { createReadStream, type BigIntStats } from 'node:fs';
import { copyFile, link, lstat, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { join, posix, relative, sep } from 'node:path';
import { FanoutError } from '../core/errors.js';
import { ByteBudget, copyPagesAt } from '../lib/transfer/index.js';
import { WholeFileWriter } from '../lib/wholefiles/index.js';
import { makeDurable } from './durable.js';
import type { ReleaseFetcher } from './fetch.js';
import { matchesStamp, type FileStamp, type ReleaseDir } from './install.js';
import type { Manifest, ManifestFile } from './manifest.js';
import { pageData, rethrowFs, stageWholeFile, type LocalPage } from './stagepages.js';
import { lstatOrNone, readBootId, StagedStamps } from './stagestamps.js';

/** An installed file, and its stamp when it was verified. */
interface LocalFile {
  path: string;
  stamp?: FileStamp;
}

/** Content hash → a copy of that page in an installed version (local dedup across versions). */
export async function localPages(dir: ReleaseDir): Promise<{ pages: Map<string, LocalPage>; files: Map<string, LocalFile> }> {
  const index = new Map<string, LocalPage>();
  const files = new Map<string, LocalFile>();
  for (const version of await dir.installed()) {
    const manifest = await dir.manifestOf(version);
    if (!manifest) continue;
    const stamps = await dir.stampsOf(version);
    for (const file of manifest.files) {
      if (!files.has(file.sha256)) files.set(file.sha256, { path: join(dir.versionDir(version), file.path), stamp: stamps[file.path] });
      file.pages.forEach((hash, i) => {
        if (index.has(hash)) return;
        const offset = i * manifest.pageSize;
        index.set(hash, { file: join(dir.versionDir(version), file.path), offset, length: Math.min(manifest.pageSize, file.size - offset) });
      });
    }
  }
  return { pages: index, files };
}

export interface StageProgress {
  bytesDone: number;
  bytesTotal: number;
  /** Bytes copied from versions already on this host. */
  bytesLocal: number;
  /** Bytes fetched from the cluster. */
  bytesFetched: number;
  /** Bytes of files already verified in staging by an earlier, interrupted run. */
  bytesResumed: number;
  /** Bytes of those read back and hashed again: files without a stamp of this boot that still matches. */
  bytesRehashed: number;
}

export interface StageOptions {
  manifest: Manifest;
  dir: ReleaseDir;
  fetcher: ReleaseFetcher;
  /**
   * Files in flight at once: by default 32 files larger than wholeFileBytes, and 256 small files
   * besides (they cost round trips and syscalls, not bytes: enough of them keep the cluster's
   * batches full). Given, it bounds both kinds.
   */
  fileConcurrency?: number;
  /** Files up to this size are fetched whole and written in one go (default 1 MiB); larger ones page by page. */
  wholeFileBytes?: number;
  /** Pages in flight per file (default 4). */
  pageWindow?: number;
  /** Bytes of pages in flight over all files (default 64 MiB). */
  bytesInFlight?: number;
  onProgress?: (progress: StageProgress) => void;
  /** Paces bytes fetched from the cluster (a host's download budget); local copies are free. */
  limiter?: { take(bytes: number, signal?: AbortSignal): Promise<void> };
  signal?: AbortSignal;
  /**
   * An installed file changed since it was verified (its stamp no longer matches) is copied and
   * the copy verified, instead of being linked: a repair, where such a file may have been written
   * through and may still be (a link shares the inode, and so whatever is written to it next).
   */
  copyChanged?: boolean;
  /** This boot's id, which staged files' stamps are trusted under (default: the kernel's; null: none, every file is hashed). */
  bootId?: string | null;
}

export const DEFAULT_FILE_CONCURRENCY = 32;
export const DEFAULT_SMALL_FILE_CONCURRENCY = 256;
const DEFAULT_WHOLE_FILE_BYTES = 1024 * 1024;
const DEFAULT_BYTES_IN_FLIGHT = 64 * 1024 * 1024;

/**
 * Downloads a version into DIR/.staging-V. Each file is written under DIR/.parts-V, page by
 * page (copied from an installed version when the content hash is already on this host,
 * otherwise fetched from the cluster), every page checked against its SHA-256, the whole file
 * against its digest, and only then renamed into staging. Files already in staging are
 * kept, so an interrupted run resumes where it stopped: re-hashed, unless an earlier run of this
 * boot verified them and they are untouched since (stagestamps.ts).
 *
 * Many files move at once (a search index is thousands of small files: each costs a request,
 * a create and a rename, and those overlap), under one budget of bytes in flight. A small file
 * is fetched whole and verified in memory, then written and renamed into staging by a batch
 * writer that writes the many files completed together in one thread-pool job. Nothing is
 * flushed file by file: the staged tree is made durable in one go once every file is in it, before
 * it is installed (a crash before that leaves staged files the next run re-verifies).
 * The manifest gives every size: directories are made once up front and staging is listed
 * once, so no file pays a stat or mkdir of its own.
 */
export async function stageVersion(opts: StageOptions): Promise<StageProgress> {
  const { manifest, dir } = opts;
  const staging = dir.stagingDir(manifest.version);
  const parts = dir.partsDir(manifest.version);
  await rm(parts, { recursive: true, force: true });
  // Not recursive (DIR is there): a recursive mkdir on a read-only file system fails with ENOENT,
  // which the round reported as `INTERNAL: ENOENT … mkdir .parts-V`, not as a directory it cannot write.
  await mkdir(parts).catch((err) => rethrowFs(err, parts));
  await realDirectory(staging);
  const { pages: local, files: localFiles } = await localPages(dir);
  const present = await keepStaged(staging, manifest.files);
  const bootId = opts.bootId === undefined ? await readBootId() : (opts.bootId ?? undefined);
  const stamps = await StagedStamps.load(dir.stagedStampFile(manifest.version), bootId, dir.clock);
  await makeDirectories(staging, manifest.files);
  const budget = new ByteBudget(opts.bytesInFlight ?? DEFAULT_BYTES_IN_FLIGHT);
  const progress: StageProgress = {
    bytesDone: 0,
    bytesTotal: manifest.files.reduce((s, f) => s + f.size, 0),
    bytesLocal: 0,
    bytesFetched: 0,
    bytesResumed: 0,
    bytesRehashed: 0,
  };
  const report = () => opts.onProgress?.({ ...progress });
  // The first failure stops the other files at once (a full disk fails them all anyway).
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  // One listener per page in flight (hundreds of small files), each removed when its page ends.
  setMaxListeners(0, signal);
  const fileOpts: StageOptions = { ...opts, signal };
  const wholeFileBytes = opts.wholeFileBytes ?? DEFAULT_WHOLE_FILE_BYTES;
  const writer = new WholeFileWriter();
  const source = { manifest, fetcher: opts.fetcher, limiter: opts.limiter, local };
  // Small and large files move side by side, each kind with its own number in flight.
  const small: number[] = [];
  const large: number[] = [];
  manifest.files.forEach((file, i) => (file.size <= wholeFileBytes ? small : large).push(i));
  const worker = (queue: { files: number[]; next: number }) => async () => {
    while (queue.next < queue.files.length) {
      if (signal.aborted) throw new FanoutError('ABORTED', 'staging aborted');
      const i = queue.files[queue.next++]!;
      await stageFile(i).catch((err: unknown) => {
        stop.abort(err);
        throw err;
      });
    }
  };
  const stageFile = async (i: number) => {
    const file = manifest.files[i]!;
    const target = join(staging, file.path);
    if (present.has(file.path)) {
      const trusted = stamps.trusts(file, lstatOrNone(target));
      // Stat'ed again after a clock reading to be hashed: its stamp must not miss a write after the stat.
      const { st, clock } = trusted ? { st: undefined, clock: undefined } : await stamps.statBeforeHash(target);
      if (trusted || (await alreadyVerified(target, st, file, (bytes) => (progress.bytesRehashed += bytes)))) {
        if (!trusted) stamps.recordStat(file, st!, clock);
        progress.bytesDone += file.size;
        progress.bytesResumed += file.size;
        report();
        return;
      }
      await rm(target, { recursive: true, force: true });
    }
    const part = join(parts, String(i));
    const same = localFiles.get(file.sha256);
    // A whole file this host already has (and that still has its digest) is hard-linked, as
    // rsync --link-dest does: installed versions are never written to.
    if (file.size > 0 && same && (await linkVerified(same, part, file, opts.copyChanged ?? false))) {
      progress.bytesDone += file.size;
      progress.bytesLocal += file.size;
      report();
    } else if (file.size <= wholeFileBytes) {
      // Written under its part name and renamed into staging in the writer's job.
      const bytes = await stageWholeFile(source, file, part, target, budget, writer, signal);
      await stamps.recordPlaced(file, target);
      progress.bytesDone += file.size;
      progress.bytesLocal += bytes.local;
      progress.bytesFetched += bytes.fetched;
      report();
      return;
    } else await writeFile(fileOpts, file, part, local, budget, progress, report);
    await rename(part, target).catch((err) => rethrowFs(err, target));
    await stamps.recordPlaced(file, target);
  };
  const workersOf = (files: number[], wanted: number) => {
    const queue = { files, next: 0 };
    return Array.from({ length: Math.min(Math.max(1, wanted), files.length) }, () => worker(queue)());
  };
  // allSettled first: no file may still be written when the caller cleans up after a failure.
  const results = await Promise.allSettled([
    ...workersOf(large, opts.fileConcurrency ?? DEFAULT_FILE_CONCURRENCY),
    ...workersOf(small, opts.fileConcurrency ?? DEFAULT_SMALL_FILE_CONCURRENCY),
  ]);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  try {
    if (stop.signal.aborted || failed) {
      // Files half written are never resumed (a run starts with an empty parts directory): on a
      // full disk they would keep it full until the next round.
      await rm(parts, { recursive: true, force: true }).catch(() => {});
      throw stop.signal.aborted ? stop.signal.reason : failed!.reason;
    }
    // One flush of the whole file system instead of a fdatasync per file (see durable.ts).
    await makeDurable(staging, manifest.files.map((f) => join(staging, f.path)), opts.signal).catch((err: unknown) => {
      if (err instanceof FanoutError) throw err;
      rethrowFs(err, staging);
    });
    await rm(parts, { recursive: true, force: true });
  } finally {
    // After a failure too: what was verified is not read again by the next round (never throws).
    await stamps.save();
  }
  report();
  return progress;
}

/** `path` as a real directory: whatever else is there (a symlink above all) is removed first, not followed. */
async function realDirectory(path: string): Promise<void> {
  const info = await lstat(path).catch(() => undefined);
  if (info?.isDirectory()) return;
  if (info) await rm(path, { recursive: true, force: true });
  await mkdir(path).catch((err) => rethrowFs(err, path));
}

/**
 * What an interrupted run left in staging that may be kept: regular files at the manifest's file
 * paths (re-verified later). Everything else is removed (rm never follows a link): a directory
 * where a file goes failed every round on the rename (EISDIR), and a symlink, to a file or to a
 * directory, would be written through or installed pointing outside the tree. The entries are
 * typed by lstat (readdir's types) and links are not descended into (withFileTypes matters: a
 * plain recursive readdir of Node 20 descends into links to directories).
 */
async function keepStaged(root: string, files: ManifestFile[]): Promise<Set<string>> {
  const wantedFiles = new Set(files.map((f) => f.path));
  const wantedDirs = new Set<string>();
  for (const file of files) for (let d = posix.dirname(file.path); d !== '.'; d = posix.dirname(d)) wantedDirs.add(d);
  const present = new Set<string>();
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath ?? entry.path, entry.name);
    const rel = relative(root, path).split(sep).join('/');
    if (entry.isFile() && wantedFiles.has(rel)) present.add(rel);
    else if (!(entry.isDirectory() && wantedDirs.has(rel))) await rm(path, { recursive: true, force: true }).catch((err) => rethrowFs(err, path));
  }
  return present;
}

/** Every directory the manifest's files need, made once (deepest first covers its parents). */
async function makeDirectories(root: string, files: ManifestFile[]): Promise<void> {
  const dirs = new Set<string>();
  for (const file of files) {
    const parent = posix.dirname(file.path);
    if (parent !== '.') dirs.add(parent);
  }
  // mkdir -p of a leaf makes its parents: only directories that are nobody's parent are asked for.
  const parents = new Set<string>();
  for (const d of dirs) for (let p = posix.dirname(d); p !== '.'; p = posix.dirname(p)) parents.add(p);
  for (const d of dirs) {
    if (parents.has(d)) continue;
    const path = join(root, d);
    await mkdir(path, { recursive: true }).catch((err) => rethrowFs(err, path));
  }
}

/**
 * Writes one file under its part name: every page written at its offset as it arrives (in
 * whatever order the window completes), the whole-file digest computed in order beside it.
 */
async function writeFile(
  opts: StageOptions,
  file: ManifestFile,
  part: string,
  local: Map<string, LocalPage>,
  budget: ByteBudget,
  progress: StageProgress,
  report: () => void,
): Promise<void> {
  const { manifest } = opts;
  // A one-page file's page hash is its digest, already checked page by page.
  const whole = file.pages.length === 1 && file.pages[0] === file.sha256 ? undefined : createHash('sha256');
  const fromLocal = new Set<number>();
  const handle = await open(part, 'w').catch((err) => rethrowFs(err, part));
  try {
    await copyPagesAt({
      target: {
        writev: (buffers, position) => handle.writev(buffers, position).catch((err) => rethrowFs(err, part)),
      },
      pages: file.pages.length,
      pageSize: manifest.pageSize,
      pageLength: (index) => Math.min(manifest.pageSize, file.size - index * manifest.pageSize),
      window: opts.pageWindow ?? 4,
      budget,
      signal: opts.signal,
      fetch: async (index, signal) => {
        const page = await pageData({ manifest, fetcher: opts.fetcher, limiter: opts.limiter, local }, file, index, signal);
        if (page.local) fromLocal.add(index);
        return page.chunks;
      },
      inOrder: whole ? (_index, chunks) => chunks.forEach((c) => whole.update(c)) : undefined,
      written: (chunks) => opts.fetcher.release(chunks),
      onWritten: (index, bytes) => {
        progress.bytesDone += bytes;
        if (fromLocal.has(index)) progress.bytesLocal += bytes;
        else progress.bytesFetched += bytes;
        report();
      },
    });
  } finally {
    await handle.close();
  }
  const digest = whole ? whole.digest('hex') : file.sha256;
  if (digest !== file.sha256) {
    throw new FanoutError('HASH_MISMATCH', `${file.path}: SHA-256 ${digest.slice(0, 16)}… differs from the manifest's ${file.sha256.slice(0, 16)}…`);
  }
}

/**
 * Links an installed file with the wanted digest. Untouched since it was verified (same inode,
 * size and ctime) it is trusted as is; otherwise its digest is checked again first.
 */
async function linkVerified(local: LocalFile, part: string, file: ManifestFile, copyChanged: boolean): Promise<boolean> {
  const from = local.path;
  const st = await lstat(from, { bigint: true }).catch(() => undefined);
  const untouched = matchesStamp(st, local.stamp);
  if (!untouched && copyChanged) return copyVerified(from, st, part, file);
  if (!untouched && !(await alreadyVerified(from, st, file))) return false;
  try {
    await link(from, part);
  } catch {
    await copyFile(from, part).catch((err) => rethrowFs(err, part));
  }
  return true;
}

/** Copies a changed installed file and keeps the copy if its bytes are the manifest's. */
async function copyVerified(from: string, st: BigIntStats | undefined, part: string, file: ManifestFile): Promise<boolean> {
  if (!st?.isFile() || Number(st.size) !== file.size) return false;
  const copied = await copyFile(from, part).then(
    () => true,
    () => false,
  );
  if (copied && (await alreadyVerified(part, await lstat(part, { bigint: true }), file))) return true;
  await rm(part, { force: true });
  return false;
}

/**
 * A file from an earlier run counts only if it is a regular file (`st`, its lstat: not a link)
 * whose bytes still match. `onRead` is told of every byte read to check them.
 */
async function alreadyVerified(path: string, st: BigIntStats | undefined, file: ManifestFile, onRead?: (bytes: number) => void): Promise<boolean> {
  if (!st?.isFile() || Number(st.size) !== file.size) return false;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    onRead?.((chunk as Buffer).length);
  }
  return hash.digest('hex') === file.sha256;
}
