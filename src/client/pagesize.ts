import { isFanoutError } from '../core/errors.js';
import type { FileInfo } from '../core/types.js';
import type { ClusterReader } from '../lib/cluster/index.js';

export interface FollowedPageSizeDeps {
  /** The cluster's page size: the session's answer (`fresh`: asked now), undefined when it cannot be learnt. */
  clusterPageSize(fresh: boolean): Promise<number | undefined>;
  /** Told once per change, before reads go on in the new size: the user moves what it counted in `from`. */
  changed(from: number, to: number): void;
}

/**
 * The page size a long-lived reader counts in, following the cluster's. Workers refuse a page
 * asked for in another size than theirs (PAGE_SIZE_MISMATCH); when the cluster's answer then says
 * its page size changed (its workers restarted with another pageSize), the user is told once and
 * the refused read may be read again in the new size. Shared by the SDK's byte reads and the FUSE
 * mount (mount/pagesize.ts).
 *
 * Why readers follow, rather than workers serving any page size (every request carries its own):
 * a worker's store, ring placement, fills and preloads are all keyed by its one page size, and
 * pages of the old size were gone from the workers anyway.
 */
export class FollowedPageSize {
  private current: number;
  /** The one look at the cluster's page size in progress: concurrent refusals share it. */
  private checking: Promise<void> | undefined;

  constructor(
    pageSize: number,
    private readonly deps: FollowedPageSizeDeps,
  ) {
    this.current = pageSize;
  }

  get pageSize(): number {
    return this.current;
  }

  /**
   * A read counted in `readPageSize` failed with `err`. Resolves when it may be read again: the
   * page size followed is another now, the cluster's. Rethrows `err` otherwise: another failure,
   * or a refusal while the cluster's answer still gives the read's page size (workers of two page
   * sizes in one cluster: theirs are the words that say so).
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
    this.deps.changed(from, size);
    this.current = size;
  }
}

/**
 * Bytes [start, end) of `file` as pages in order, in the page size `size` follows: a page refused
 * for its size once the cluster's changed is read again from the byte it stopped at, in pages of
 * the new size. Only whole, verified pages were handed on before, so no page mixes two sizes and
 * no byte is given twice or skipped.
 */
export async function* followingPages(
  size: FollowedPageSize,
  readerOf: (pageSize: number) => Pick<ClusterReader, 'pages'>,
  mount: string,
  file: FileInfo,
  start: number,
  end: number,
  signal?: AbortSignal,
): AsyncGenerator<Buffer[]> {
  let at = start;
  for (;;) {
    const pageSize = size.pageSize;
    try {
      for await (const page of readerOf(pageSize).pages(mount, file, at, end, signal)) {
        for (const chunk of page) at += chunk.length;
        yield page;
      }
      return;
    } catch (err) {
      await size.refused(err, pageSize);
    }
  }
}
