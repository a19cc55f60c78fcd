import { stat, utimes } from 'node:fs/promises';
import type { StoredPage } from './types.js';

export const DEFAULT_READ_MARK_INTERVAL_MS = 5 * 60 * 1000;

/** Marks queued between two flushes at most (512 KiB of references); more wait for the next flush, still stale. */
const MAX_PENDING = 65_536;

/** Time one flush spends at most: a tick of the disk watch, or the worker's stop. */
const FLUSH_BUDGET_MS = 1000;

/**
 * A page's last read, kept in its file's mtime, so a restart rebuilds the LRU order from reads
 * and not from writes (scanPages sorts by mtime). Before, a page read a second before the restart
 * but written long ago was the first evicted after it, ahead of pages written lately and never read.
 *
 * A read costs one comparison (PageStore.touch): only a page whose recorded time is older than
 * the interval is queued, once; `flush` (the store's disk watch, every few seconds, and the
 * worker's stop) sets the queued files' times off the read path, a stat and a utimes each.
 * So the order a restart sees is exact to the interval, and a page read all the time costs one
 * file time update per interval. Not the atime: a mount's relatime or noatime moves it or not
 * behind the store's back, and the kernel's own reads for the scrub would count as reads.
 */
export class ReadMarks {
  private pending: StoredPage[] = [];
  /** A read of a page whose markedAt is before this queues a mark. */
  staleBefore: number;

  constructor(
    private readonly intervalMs: number,
    now: number,
  ) {
    this.staleBefore = now - intervalMs;
  }

  /** Queues a mark of `entry`'s read (the caller saw it stale); once until flushed. */
  queue(entry: StoredPage): void {
    if (this.pending.length >= MAX_PENDING) return;
    entry.markedAt = Infinity;
    this.pending.push(entry);
  }

  get queued(): number {
    return this.pending.length;
  }

  /**
   * Sets the mtime of each queued page still stored (`current`) to `now`, whole seconds: a time
   * the stat of the file gives back exactly, so a page whose file was checked (verifiedAt equal
   * to its mtime) stays checked, and openForSend keeps trusting its kept descriptor.
   */
  async flush(now: number, current: (entry: StoredPage) => boolean, budgetMs = FLUSH_BUDGET_MS): Promise<void> {
    this.staleBefore = now - this.intervalMs;
    const due = this.pending;
    this.pending = [];
    const seconds = Math.floor(now / 1000);
    const until = performance.now() + budgetMs;
    for (const [at, entry] of due.entries()) {
      // A stat and a utimes each through the thread pool: tens of thousands queued would hold the
      // disk watch's tick (its evictions) or the worker's stop for seconds. The rest waits for the
      // next tick (at the stop: lost, as reads since the last tick are on a kill).
      if (performance.now() > until) {
        this.pending = due.slice(at).concat(this.pending);
        return;
      }
      entry.markedAt = now;
      if (!current(entry)) continue;
      try {
        const before = await stat(entry.file);
        if (before.mtimeMs >= seconds * 1000) {
          entry.markedAt = before.mtimeMs; // written within this second: already as recent
          continue;
        }
        await utimes(entry.file, seconds, seconds);
        entry.markedAt = seconds * 1000;
        if (entry.verifiedAt === before.mtimeMs && before.size === entry.size) entry.verifiedAt = seconds * 1000;
      } catch {
        // Gone (evicted, dropped) or unreadable: the read path says what broke; tried again after the interval.
      }
    }
  }
}
