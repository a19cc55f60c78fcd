import { pageKey } from '../lib/pagekey/index.js';
import type { Member, PageRef } from '../core/types.js';
import { PageFetcher, type PageFetcherOptions, type PageRequestOptions } from '../lib/cluster/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { PageStore } from '../lib/pagestore/index.js';

/** What the local shortcut needs of its worker (read lazily: the worker builds these after its fetcher). */
export interface LocalPages {
  config: { id: string; pageSize: number };
  store: PageStore;
  metrics: WorkerMetrics;
}

/**
 * The worker's own page fetcher. When the worker itself reads through the cluster (the
 * /v1/data range route, the S3 gateway) and a page's owner is this very worker, a page already
 * in the store is taken from it directly instead of through a loopback HTTP request to itself:
 * that request cost the worker as much CPU again as serving the page (measured: about five
 * times the CPU of serving the same bytes to an external SDK reader). The store verifies the
 * page's CRC32 on read, as the page route does. Anything else (a miss, a fill in flight, a
 * peer, a direct read) takes the ordinary HTTP path, with its single flight.
 */
export class LocalFirstFetcher extends PageFetcher {
  /** Store buffers handed out, until their consumer says they are written (see release). */
  private readonly lent = new WeakMap<Buffer, () => void>();

  constructor(
    private readonly local: () => LocalPages,
    options: PageFetcherOptions = {},
  ) {
    super(options);
  }

  /**
   * Gives a page buffer from fetch() back to the store's pool once its bytes have been written
   * out: reusing buffers matters here (fresh 4 MiB buffers fault in page by page, which cost
   * more than the copy-free read saved). Chunks never released, such as the sliced ends of a
   * range or pages of an aborted read, are simply garbage-collected.
   */
  override release(chunk: Buffer): void {
    const release = this.lent.get(chunk);
    if (release) {
      this.lent.delete(chunk);
      release();
    } else {
      super.release(chunk);
    }
  }

  override async fetch(member: Member, ref: PageRef, expectedLength: number, options: PageRequestOptions = {}): Promise<Buffer[]> {
    const { config, store, metrics } = this.local();
    if (member.id === config.id && !options.direct) {
      const key = pageKey(ref, config.pageSize);
      if (store.has(key)) {
        const page = await store.get(key);
        if (page && page.data.length === expectedLength) {
          metrics.hits.inc();
          metrics.bytesServed.inc(expectedLength);
          // The consumer may still be writing this buffer after the reader moves on: it goes back
          // to the pool only through release(), never here.
          this.lent.set(page.data, page.release);
          return [page.data];
        }
        page?.release();
      }
    }
    return super.fetch(member, ref, expectedLength, options);
  }
}
