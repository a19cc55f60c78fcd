import { createHash, hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { FanoutError } from '../core/errors.js';
import { isNotWritable } from '../lib/statefile/index.js';
import type { ByteBudget } from '../lib/transfer/index.js';
import type { WholeFileWriter } from '../lib/wholefiles/index.js';
import type { ReleaseFetcher } from './fetch.js';
import type { Manifest, ManifestFile } from './manifest.js';

/** Where a page with a given content hash already sits on this host, in an installed version. */
export interface LocalPage {
  file: string;
  offset: number;
  length: number;
}

/** What fetching a page needs: the stage's manifest, fetcher, download pacing and stop signal. */
export interface PageSource {
  manifest: Manifest;
  fetcher: ReleaseFetcher;
  limiter?: { take(bytes: number, signal?: AbortSignal): Promise<void> };
  local: Map<string, LocalPage>;
}

/** SHA-256 of a page's chunks: one call for the usual single chunk (no Hash object). */
export function sha256Of(chunks: Buffer[]): string {
  if (chunks.length === 1) return hash('sha256', chunks[0]!, 'hex');
  const digest = createHash('sha256');
  for (const chunk of chunks) digest.update(chunk);
  return digest.digest('hex');
}

/** One page: a verified local copy if this host has the content, else from the cluster. */
export async function pageData(source: PageSource, file: ManifestFile, index: number, signal: AbortSignal): Promise<{ chunks: Buffer[]; local: boolean }> {
  const hash = file.pages[index]!;
  const copy = source.local.get(hash);
  if (copy) {
    const data = await readRange(copy).catch(() => undefined);
    // A local copy that was changed on disk is simply not used.
    if (data && sha256Of([data]) === hash) return { chunks: [data], local: true };
  }
  const pageSize = source.manifest.pageSize;
  await source.limiter?.take(Math.min(pageSize, file.size - index * pageSize), signal);
  return { chunks: await source.fetcher.pageChunks(source.manifest, file, index, signal), local: false };
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

/**
 * Stages a small file whole: its pages fetched at once (under the shared byte budget), the
 * digest checked, then written under its part name and renamed into staging by the batch writer,
 * which writes the files completed in the same turn in one thread-pool job (lib/wholefiles).
 * Nothing is written before every byte is verified, so a failure leaves no part behind.
 * Resolves with the bytes that came from this host's installed versions.
 */
export async function stageWholeFile(
  source: PageSource,
  file: ManifestFile,
  part: string,
  target: string,
  budget: ByteBudget,
  writer: WholeFileWriter,
  signal: AbortSignal,
): Promise<{ local: number; fetched: number }> {
  const release = await budget.acquire(file.size, signal);
  let chunks: Buffer[] = [];
  try {
    const results = await Promise.allSettled(file.pages.map((_hash, index) => pageData(source, file, index, signal)));
    // Every fetch has ended before the budget is released: none still holds memory.
    const pages = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    chunks = pages.length === 1 ? pages[0]!.chunks : pages.flatMap((p) => p.chunks);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    // A one-page file's page hash is its digest, already checked with the page.
    if (!(file.pages.length === 1 && file.pages[0] === file.sha256)) {
      const digest = sha256Of(chunks);
      if (digest !== file.sha256) {
        throw new FanoutError('HASH_MISMATCH', `${file.path}: SHA-256 ${digest.slice(0, 16)}… differs from the manifest's ${file.sha256.slice(0, 16)}…`);
      }
    }
    let length = 0;
    for (const c of chunks) length += c.length;
    if (length !== file.size) throw new FanoutError('INTERNAL', `${file.path}: pages hold ${length} bytes, the manifest says ${file.size}`);
    if (signal.aborted) throw new FanoutError('ABORTED', 'staging aborted');
    await writer.write({ path: target, tmp: part, chunks }).catch((err) => rethrowFs(err, target));
    let local = 0;
    pages.forEach((p, index) => {
      if (p.local) local += Math.min(source.manifest.pageSize, file.size - index * source.manifest.pageSize);
    });
    return { local, fetched: file.size - local };
  } finally {
    // Written (or failed) and read by nothing else: the received memory is read into again.
    source.fetcher.release(chunks);
    release();
  }
}

export function rethrowFs(err: unknown, path: string): never {
  if (err instanceof FanoutError) throw err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') throw new FanoutError('DISK_FULL', `no space left writing ${path}; the current version stays in place`, { cause: err });
  // A file system remounted read-only (ext4's errors=remount-ro) is the host's to mend, as the agent says of a read-only --dir.
  if (isNotWritable(err)) throw new FanoutError('INVALID_CONFIG', `cannot write ${path}: ${(err as Error).message}; the current version stays in place`, { cause: err });
  throw new FanoutError('INTERNAL', `cannot write ${path}: ${(err as Error).message}`, { cause: err });
}
