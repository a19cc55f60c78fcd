import type { PageRef } from '../core/types.js';
import type { PageFill } from '../lib/transfer/index.js';
import type { Ufs } from '../lib/ufs/index.js';

/** Pages up to this size are read from a source with readInto in one step (the batch's item limit). */
export const SMALL_WHOLE_READ = 1024 * 1024;
/** Idle small fill buffers kept for reuse (see PageService's flights pool). */
export const SMALL_IDLE_BYTES = 8 * 1024 * 1024;

/**
 * A small whole page read in one step straight into the fill's buffer (no stream, no copy). The
 * source checks the version and the size the request named on the open file, as the page route
 * would have with a stat: a page is never kept under a version or size that is not the file's.
 * The source budget is taken once the bytes are in, as for a streamed chunk.
 */
export async function readSmallPage(
  readInto: NonNullable<Ufs['readInto']>,
  ref: PageRef,
  start: number,
  length: number,
  fill: PageFill,
  signal: AbortSignal,
  takeBudget: (bytes: number) => Promise<void>,
): Promise<Buffer> {
  const into = fill.claimBuffer().subarray(0, length);
  try {
    // A content-addressed page is hashed before it is stored (content.ts): beside the read, on
    // the pool thread, where the source can.
    fill.sha256 = await readInto(ref.path, ref.version, ref.size, start, into, signal, { sha256: ref.hash !== undefined });
  } catch (err) {
    // A read past its deadline may still write into the buffer: it never goes back to the pool.
    fill.abandonBuffer();
    throw err;
  }
  await takeBudget(length);
  return into;
}
