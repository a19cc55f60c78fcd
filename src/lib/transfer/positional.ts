import { FanoutError, abortError } from '../../core/errors.js';
import type { ByteBudget } from './bytebudget.js';
import { leadingPiece } from '../writepiece/index.js';

/** Where pages land: a file handle (fs/promises FileHandle fits). */
export interface PositionalTarget {
  writev(buffers: Buffer[], position: number): Promise<{ bytesWritten: number }>;
}

export interface PagesAtOptions {
  target: PositionalTarget;
  /** Pages of the file, and their size (the last one may be shorter: see pageLength). */
  pages: number;
  pageSize: number;
  pageLength: (index: number) => number;
  /** Pages in flight (fetched, being written, or written and waiting for inOrder) for this file. */
  window: number;
  /** One page's bytes, verified; several chunks are fine (one pwritev per MiB of them: lib/writepiece). */
  fetch: (index: number, signal: AbortSignal) => Promise<Buffer[]>;
  /**
   * Called for every page in index order once it is written (a whole-file digest). A page that
   * completes early is written at once but kept until its turn; the window bounds how many.
   */
  inOrder?: (index: number, chunks: Buffer[]) => void;
  /** Called as each page is written, in completion order. */
  onWritten?: (index: number, bytes: number) => void;
  /** Told a page's chunks are no longer needed (written, and past inOrder): their memory may be reused. */
  written?: (chunks: Buffer[]) => void;
  /** Bytes in flight shared with other files being copied at the same time. */
  budget?: ByteBudget;
  signal?: AbortSignal;
}

/**
 * Copies a file page by page, writing each page at its offset as soon as it arrives, in
 * whatever order the window completes: a slow page delays only itself, not the writes of the
 * pages behind it, and no reorder buffer holds bytes for the sake of the write order. On any
 * failure the other pages are cancelled and every write in flight has ended before the error
 * is thrown, so the caller can close and delete the file safely.
 */
export async function copyPagesAt(opts: PagesAtOptions): Promise<void> {
  const { pages } = opts;
  if (pages === 0) return;
  const window = Math.max(1, opts.window);
  const controller = new AbortController();
  const onAbort = () => controller.abort(abortError(opts.signal));
  if (opts.signal?.aborted) throw abortError(opts.signal);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  /** Pages being fetched or written; each settles without throwing (a failure lands in `failure`). */
  const inflight = new Map<number, Promise<void>>();
  /** Written pages waiting for inOrder, with the budget they hold. */
  const held = new Map<number, { chunks: Buffer[]; release?: () => void }>();
  // The first page that failed. Recorded rather than thrown from the page's promise: a page
  // that fails while the loop is not racing (two pages settling in one tick) must still be
  // seen, and a rejected promise nobody awaits would take the process down.
  let failure: { error: unknown } | undefined;
  let launched = 0;
  let finished = 0; // pages out of the window: written (and passed to inOrder, if given)
  let ordered = 0;

  const launch = (index: number) => {
    const work = (async () => {
      const length = opts.pageLength(index);
      const release = await opts.budget?.acquire(length, controller.signal);
      try {
        const chunks = await opts.fetch(index, controller.signal);
        await writeChunks(opts.target, chunks, index * opts.pageSize, length);
        opts.onWritten?.(index, length);
        if (opts.inOrder) {
          held.set(index, { chunks, release });
          return;
        }
        opts.written?.(chunks);
        finished++;
      } finally {
        if (!opts.inOrder) release?.();
      }
    })();
    inflight.set(
      index,
      work
        .catch((error: unknown) => {
          failure ??= { error };
        })
        .finally(() => inflight.delete(index)),
    );
  };

  try {
    for (;;) {
      if (failure) throw failure.error;
      for (let page = held.get(ordered); page; page = held.get(ordered)) {
        held.delete(ordered);
        page.release?.();
        opts.inOrder!(ordered, page.chunks);
        opts.written?.(page.chunks);
        ordered++;
        finished++;
      }
      if (finished >= pages) return;
      while (launched < pages && launched - finished < window) launch(launched++);
      // Never empty here: pages not finished are either in flight or held behind one in flight.
      await Promise.race(inflight.values());
    }
  } catch (err) {
    controller.abort(err instanceof FanoutError ? err : new FanoutError('ABORTED', 'another page failed'));
    // No write may still be running when the caller closes or deletes the file.
    await Promise.allSettled(inflight.values());
    for (const page of held.values()) page.release?.();
    throw err;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * All of a page's chunks at `position` with pwritev, continuing after a partial write. A target
 * that ignores the position (a FIFO's sequential writes) gets the same loop.
 */
export async function writeChunks(target: PositionalTarget, chunks: Buffer[], position: number, length: number): Promise<void> {
  let received = 0;
  for (const chunk of chunks) received += chunk.length;
  if (received !== length) throw new FanoutError('INTERNAL', `page at ${position} has ${received} bytes, expected ${length}`);
  let rest = chunks;
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await target.writev(leadingPiece(rest), position + done);
    if (bytesWritten <= 0) throw new FanoutError('INTERNAL', `write at ${position + done} made no progress`);
    done += bytesWritten;
    rest = skipBytes(rest, bytesWritten);
  }
}

/** The chunks after their first `bytes` bytes (views, no copy): what a partial writev left. */
export function skipBytes(chunks: Buffer[], bytes: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = bytes;
  for (const chunk of chunks) {
    if (skip >= chunk.length) {
      skip -= chunk.length;
      continue;
    }
    out.push(skip > 0 ? chunk.subarray(skip) : chunk);
    skip = 0;
  }
  return out;
}
