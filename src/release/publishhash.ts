import { setMaxListeners } from 'node:events';
import type { FileInfo } from '../core/types.js';
import { releaseSourceChunk, type Ufs } from '../lib/ufs/index.js';
import { hashFile, sha256Hex } from './manifest.js';

/**
 * Files up to this size, in one page, are read whole in one thread-pool job that hashes them too
 * (Ufs.readInto, a directory source with the small-file addon). Streamed instead, 5,000 files of
 * 4 KiB took 8.0 s to hash, against 0.33 s so (most of it garbage collection and the stream's
 * hand-offs); the same threshold as a sync agent's whole-file staging.
 */
const WHOLE_FILE_BYTES = 1024 * 1024;
/** Whole small files in flight: at most 64 MiB of buffers. The source's thread gate bounds the calls. */
const SMALL_FILE_CONCURRENCY = 64;
/** Streamed files in flight. */
const LARGE_FILE_CONCURRENCY = 4;

export interface FileHashes {
  size: number;
  sha256: string;
  pages: string[];
}

export interface HashOptions {
  pageSize: number;
  /** Streamed files hashed at once (default 4). */
  concurrency?: number;
  onFile?: (info: FileInfo) => void;
  signal?: AbortSignal;
}

/**
 * Hashes every file (per page and whole) at the version it was listed at; the result is in the
 * order of `infos`. Small files and large ones move side by side, each kind with its own number
 * in flight, as staging does. The first failure stops the rest.
 */
export async function hashFiles(ufs: Ufs, infos: readonly FileInfo[], opts: HashOptions): Promise<FileHashes[]> {
  const hashes: FileHashes[] = new Array(infos.length);
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  // One listener per read in flight.
  setMaxListeners(0, signal);
  const wholeBytes = Math.min(WHOLE_FILE_BYTES, opts.pageSize);
  const small: number[] = [];
  const large: number[] = [];
  infos.forEach((info, i) => (ufs.readInto && info.size <= wholeBytes ? small : large).push(i));
  const hashOne = async (i: number) => {
    const info = infos[i]!;
    hashes[i] = info.size <= wholeBytes && ufs.readInto ? await hashWhole(ufs, info, signal) : await hashStreamed(ufs, info, opts.pageSize, signal);
    opts.onFile?.(info);
  };
  const workersOf = (queue: number[], wanted: number) => {
    let next = 0;
    const worker = async () => {
      while (next < queue.length) {
        signal.throwIfAborted();
        await hashOne(queue[next++]!).catch((err: unknown) => {
          stop.abort(err);
          throw err;
        });
      }
    };
    return Array.from({ length: Math.min(Math.max(1, wanted), queue.length) }, worker);
  };
  // allSettled: no read may still run when the caller reports the failure.
  const results = await Promise.allSettled([...workersOf(small, SMALL_FILE_CONCURRENCY), ...workersOf(large, opts.concurrency ?? LARGE_FILE_CONCURRENCY)]);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw stop.signal.aborted ? stop.signal.reason : failed.reason;
  return hashes;
}

/** A file of at most one page: its one page hash is the whole file's. */
async function hashWhole(ufs: Ufs, info: FileInfo, signal: AbortSignal): Promise<FileHashes> {
  const bytes = Buffer.allocUnsafe(info.size);
  const sha256 = (await ufs.readInto!(info.path, info.version, info.size, 0, bytes, signal, { sha256: true })) ?? sha256Hex(bytes);
  return { size: info.size, sha256, pages: info.size > 0 ? [sha256] : [] };
}

async function hashStreamed(ufs: Ufs, info: FileInfo, pageSize: number, signal: AbortSignal): Promise<FileHashes> {
  const stream = ufs.read(info.path, info.version, 0, info.size, signal) as AsyncIterable<Buffer>;
  return hashFile(givenBack(stream), pageSize);
}

/**
 * The chunks of a source's read, each given back to the source once hashed (hashFile is done
 * with a chunk when it asks for the next). Kept, every read took fresh 1 MiB buffers: with
 * 5,000 small files streamed, a third of the publish's CPU time was garbage collection.
 */
async function* givenBack(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) {
    yield chunk;
    releaseSourceChunk(chunk);
  }
}
