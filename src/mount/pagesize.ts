import { isFanoutError } from '../core/errors.js';

export interface PageSizeDeps {
  /** The cluster's page size: the session's answer (`fresh`: asked now), undefined when it cannot be learnt. */
  clusterPageSize(fresh: boolean): Promise<number | undefined>;
  /** Moves everything the mount counts in pages from `from` to `to` (fs.ts: its pages, readers, offers). */
  rebuild(from: number, to: number): void;
  warn(fields: object, message: string): void;
}

/**
 * The page size the mount counts in, following the cluster's. Workers refuse a page asked for in
 * another size than theirs (PAGE_SIZE_MISMATCH); when the cluster's answer then says its page
 * size changed (its workers restarted with another pageSize), the mount rebuilds everything it
 * counts in pages in the new size, says so once, and the refused read is read again.
 *
 * Why the mount follows, rather than workers serving any page size (every request carries its
 * own): a worker's store, ring placement, fills and preloads are all keyed by its one page size,
 * and pages of the old size were gone from the workers anyway; the mount's own state is what was
 * counted in the old size, and it is all the mount's to drop.
 */
export class PageSizeFollower {
  private current: number;
  /** The one look at the cluster's page size in progress: concurrent refusals share it. */
  private checking: Promise<void> | undefined;

  constructor(
    pageSize: number,
    private readonly deps: PageSizeDeps,
  ) {
    this.current = pageSize;
  }

  get pageSize(): number {
    return this.current;
  }

  /**
   * A read counted in `readPageSize` failed with `err`. Resolves when it may be read again: the
   * mount counts in another page size now, the cluster's. Rethrows `err` otherwise: another
   * failure, or a refusal while the cluster's answer still gives the read's page size (workers
   * of two page sizes in one cluster: theirs are the words that say so).
   */
  async refused(err: unknown, readPageSize: number): Promise<void> {
    if (!isFanoutError(err, 'PAGE_SIZE_MISMATCH')) throw err;
    if (readPageSize === this.current) {
      this.checking ??= this.check().finally(() => (this.checking = undefined));
      await this.checking;
    }
    if (this.current === readPageSize) throw err;
  }

  private async check(): Promise<void> {
    let size = await this.deps.clusterPageSize(false).catch(() => undefined);
    // The session's answer may be older than the workers' restart: ask again before believing it.
    if (size === this.current) size = await this.deps.clusterPageSize(true).catch(() => undefined);
    if (size === undefined || size === this.current || !Number.isInteger(size) || size <= 0) return;
    const from = this.current;
    this.deps.rebuild(from, size);
    this.current = size;
    this.deps.warn(
      { code: 'PAGE_SIZE_MISMATCH', mountPageSize: from, clusterPageSize: size },
      `the cluster's pageSize changed from ${from} to ${size} bytes (its workers restarted with another pageSize): this mount now counts pages of ${size} bytes; the pages it kept of ${from} bytes are dropped and reads refused in the old size are read again`,
    );
  }
}
