import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, link, mkdir, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FanoutError } from '../core/errors.js';
import type { ReleaseFetcher } from './fetch.js';
import type { FileStamp, ReleaseDir } from './install.js';
import type { Manifest, ManifestFile } from './manifest.js';

/** An installed file, and its stamp when it was verified. */
interface LocalFile {
  path: string;
  stamp?: FileStamp;
}

/** Where a page with a given content hash already sits on this host, in an installed version. */
interface LocalPage {
  file: string;
  offset: number;
  length: number;
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
}

export interface StageOptions {
  manifest: Manifest;
  dir: ReleaseDir;
  fetcher: ReleaseFetcher;
  /** Files written in parallel, and pages in flight per file. */
  fileConcurrency?: number;
  pageWindow?: number;
  onProgress?: (progress: StageProgress) => void;
  /** Paces bytes fetched from the cluster (a host's download budget); local copies are free. */
  limiter?: { take(bytes: number, signal?: AbortSignal): Promise<void> };
  signal?: AbortSignal;
}

/**
 * Downloads a version into DIR/.staging-V. Each file is written under DIR/.parts-V, page by
 * page (copied from an installed version when the content hash is already on this host,
 * otherwise fetched from the cluster), every page checked against its SHA-256, the whole file
 * against its digest, and only then renamed into staging. Files already in staging are
 * re-verified and kept, so an interrupted run resumes where it stopped.
 */
export async function stageVersion(opts: StageOptions): Promise<StageProgress> {
  const { manifest, dir } = opts;
  const staging = dir.stagingDir(manifest.version);
  const parts = dir.partsDir(manifest.version);
  await rm(parts, { recursive: true, force: true });
  await mkdir(parts, { recursive: true });
  await mkdir(staging, { recursive: true });
  const { pages: local, files: localFiles } = await localPages(dir);
  const progress: StageProgress = {
    bytesDone: 0,
    bytesTotal: manifest.files.reduce((s, f) => s + f.size, 0),
    bytesLocal: 0,
    bytesFetched: 0,
    bytesResumed: 0,
  };
  const report = () => opts.onProgress?.({ ...progress });
  let next = 0;
  const worker = async () => {
    while (next < manifest.files.length) {
      if (opts.signal?.aborted) throw new FanoutError('ABORTED', 'staging aborted');
      const i = next++;
      const file = manifest.files[i]!;
      const target = join(staging, file.path);
      if (await alreadyVerified(target, file)) {
        progress.bytesDone += file.size;
        progress.bytesResumed += file.size;
        report();
        continue;
      }
      await rm(target, { force: true });
      const part = join(parts, String(i));
      const same = localFiles.get(file.sha256);
      // A whole file this host already has (and that still has its digest) is hard-linked, as
      // rsync --link-dest does: installed versions are never written to.
      if (file.size > 0 && same && (await linkVerified(same, part, file))) {
        progress.bytesDone += file.size;
        progress.bytesLocal += file.size;
        report();
      } else await writeFile(opts, file, part, local, progress, report);
      await mkdir(dirname(target), { recursive: true }).catch((err) => rethrowFs(err, target));
      await rename(part, target);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.fileConcurrency ?? 4, manifest.files.length)) }, worker));
  await rm(parts, { recursive: true, force: true });
  report();
  return progress;
}

async function writeFile(
  opts: StageOptions,
  file: ManifestFile,
  part: string,
  local: Map<string, LocalPage>,
  progress: StageProgress,
  report: () => void,
): Promise<void> {
  const { manifest } = opts;
  const whole = createHash('sha256');
  const handle = await open(part, 'w').catch((err) => rethrowFs(err, part));
  try {
    const window: Promise<{ data: Buffer; local: boolean }>[] = [];
    let launched = 0;
    const launch = () => {
      const index = launched++;
      const p = pageData(opts, file, index, local);
      p.catch(() => {});
      window.push(p);
    };
    const size = Math.max(1, opts.pageWindow ?? 4);
    while (launched < file.pages.length && window.length < size) launch();
    for (let index = 0; index < file.pages.length; index++) {
      const { data, local: fromLocal } = await window.shift()!;
      if (launched < file.pages.length) launch();
      whole.update(data);
      await writeAll(handle, data, index * manifest.pageSize, part);
      progress.bytesDone += data.length;
      if (fromLocal) progress.bytesLocal += data.length;
      else progress.bytesFetched += data.length;
      report();
    }
    await handle.datasync().catch((err) => rethrowFs(err, part));
  } finally {
    await handle.close();
  }
  const digest = whole.digest('hex');
  if (digest !== file.sha256) {
    throw new FanoutError('HASH_MISMATCH', `${file.path}: SHA-256 ${digest.slice(0, 16)}… differs from the manifest's ${file.sha256.slice(0, 16)}…`);
  }
}

/** One page: a verified local copy if this host has the content, else from the cluster. */
async function pageData(opts: StageOptions, file: ManifestFile, index: number, local: Map<string, LocalPage>): Promise<{ data: Buffer; local: boolean }> {
  const hash = file.pages[index]!;
  const copy = local.get(hash);
  if (copy) {
    const data = await readRange(copy).catch(() => undefined);
    // A local copy that was changed on disk is simply not used.
    if (data && createHash('sha256').update(data).digest('hex') === hash) return { data, local: true };
  }
  await opts.limiter?.take(Math.min(opts.manifest.pageSize, file.size - index * opts.manifest.pageSize), opts.signal);
  return { data: await opts.fetcher.page(opts.manifest, file, index, opts.signal), local: false };
}

async function readRange(page: LocalPage): Promise<Buffer> {
  const handle = await open(page.file, 'r');
  try {
    const data = Buffer.allocUnsafe(page.length);
    let offset = 0;
    while (offset < page.length) {
      const { bytesRead } = await handle.read(data, offset, page.length - offset, page.offset + offset);
      if (bytesRead === 0) throw new Error('short read');
      offset += bytesRead;
    }
    return data;
  } finally {
    await handle.close();
  }
}

async function writeAll(handle: FileHandle, data: Buffer, position: number, file: string): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const { bytesWritten } = await handle.write(data, offset, data.length - offset, position + offset).catch((err) => rethrowFs(err, file));
    offset += bytesWritten;
  }
}

/**
 * Links an installed file with the wanted digest. Untouched since it was verified (same inode,
 * size and ctime) it is trusted as is; otherwise its digest is checked again first.
 */
async function linkVerified(local: LocalFile, part: string, file: ManifestFile): Promise<boolean> {
  const from = local.path;
  const now = await stat(from, { bigint: true }).catch(() => undefined);
  const untouched =
    now !== undefined && local.stamp !== undefined && Number(now.ino) === local.stamp.ino && Number(now.size) === local.stamp.size && String(now.ctimeNs) === local.stamp.ctimeNs;
  if (!untouched && !(await alreadyVerified(from, file))) return false;
  try {
    await link(from, part);
  } catch {
    await copyFile(from, part).catch((err) => rethrowFs(err, part));
  }
  return true;
}

/** A staged file from an earlier run counts only if its bytes still match the manifest. */
async function alreadyVerified(path: string, file: ManifestFile): Promise<boolean> {
  const info = await stat(path).catch(() => undefined);
  if (!info?.isFile() || info.size !== file.size) return false;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex') === file.sha256;
}

function rethrowFs(err: unknown, path: string): never {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') throw new FanoutError('DISK_FULL', `no space left writing ${path}; the current version stays in place`, { cause: err });
  throw new FanoutError('INTERNAL', `cannot write ${path}: ${(err as Error).message}`, { cause: err });
}
