import { setMaxListeners } from 'node:events';
import { pageKey } from '../lib/pagekey/index.js';
import type { Member, PageRef } from '../core/types.js';
import { FanoutError } from '../core/errors.js';
import { PageFetcher, type PageFetcherOptions, type PageRequestOptions } from '../lib/cluster/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { PageStore, VerifiedPage } from '../lib/pagestore/index.js';
import { MAX_INTERIM_WAIT_MS } from '../lib/leanhttp/index.js';
import { toFanoutError } from './http.js';
import type { PageService } from './pageservice.js';

/** What the local shortcut needs of its worker (read lazily: the worker builds these after its fetcher). */
export interface LocalPages {
  config: { id: string; pageSize: number };
  store: PageStore;
  metrics: WorkerMetrics;
  /** The page service whose single-flight fills /v1/page requests join (wholePage). */
  pages: Pick<PageService, 'wholePage'>;
}

/** The signal of a fetch without one: never aborts (one for all: each waiting fill listens while it waits). */
const NEVER = new AbortController().signal;
setMaxListeners(0, NEVER);

/**
 * The worker's own page fetcher. When the worker itself reads through the cluster (the
 * /v1/data range route, the S3 gateway) and a page's owner is this very worker, the page is
 * taken in-process instead of through a loopback HTTP request to itself: a page already in the
 * store directly (that request cost the worker as much CPU again as serving the page, measured:
 * about five times the CPU of serving the same bytes to an external SDK reader; the store
 * verifies the page's CRC32 on read, as the page route does), and a page not stored from the
 * page service's own fill, the one /v1/page requests of that page join (PageService.wholePage:
 * one source read per page, the same fill slots, source budget, store commit and relay from a
 * primary owner). A cold page through loopback took two file descriptors, a connection pair
 * and an HTTP parse and copy on both sides, on the worker's one thread: a worker at its fd
 * limit failed its own cold reads with OVERLOADED. Peers and direct reads take the HTTP path.
 */
export class LocalFirstFetcher extends PageFetcher {
  /** Page buffers handed out (the store's, or a fill's), until their consumer says they are written (see release). */
  private readonly lent = new WeakMap<Buffer, () => void>();

  constructor(
    private readonly local: () => LocalPages,
    options: PageFetcherOptions = {},
  ) {
    super(options);
  }

  /**
   * Gives a page buffer from fetch() back to the store's pool, or a fill's buffer to the fills'
   * pool, once its bytes have been written out: reusing buffers matters here (fresh 4 MiB
   * buffers fault in page by page, which cost more than the copy-free read saved). Chunks never
   * released, such as the sliced ends of a range or pages of an aborted read, are simply
   * garbage-collected.
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
    const local = this.local();
    const { config, store, metrics } = local;
    // A request counted in another page size goes out, to be refused as the page route refuses it.
    if (member.id !== config.id || options.direct || (options.pageSize !== undefined && options.pageSize !== config.pageSize)) {
      return super.fetch(member, ref, expectedLength, options);
    }
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
    return this.filled(local, member, ref, expectedLength, options);
  }

  /**
   * The page from the page service's fill (or the store, if a fill landed meanwhile), with the
   * errors the page route's answer would have given this fetcher. The reader leaving (its
   * signal) leaves the fill: it stops only if no other reader waits for it, as a client leaving
   * /v1/page does. The route's checks of a request (version and size against a stat) are not
   * needed: the ref is built from this worker's own stat of the file, and a source read checks
   * the version it reads (SOURCE_CHANGED).
   */
  private async filled(local: LocalPages, member: Member, ref: PageRef, expectedLength: number, options: PageRequestOptions): Promise<Buffer[]> {
    // As the route's 102: a reader racing its candidates does not hedge a page being filled here
    // (another worker would only relay this same fill).
    options.onProgress?.('filling');
    let page: VerifiedPage;
    try {
      page = await local.pages.wholePage(ref, false, options.preload ? 'preload' : 'read', options.signal ?? NEVER, this.timeouts.fillingMs ?? MAX_INTERIM_WAIT_MS);
    } catch (err) {
      throw this.asAnswered(member, err, options.signal);
    }
    if (page.data.length !== expectedLength) {
      page.release();
      throw new FanoutError(
        page.data.length > expectedLength ? 'CHECKSUM_MISMATCH' : 'WORKER_UNAVAILABLE',
        `worker ${member.id} has ${page.data.length} bytes for page ${ref.index} of /${ref.mount}/${ref.path}, not ${expectedLength}`,
      );
    }
    this.lent.set(page.data, page.release);
    return [page.data];
  }

  /** A fill's failure as the page route's answer to this fetcher would have been taken (PageFetcher.asWorkerMeant). */
  private asAnswered(member: Member, err: unknown, signal: AbortSignal | undefined): FanoutError {
    if (signal?.aborted) return new FanoutError('ABORTED', 'page read aborted', { cause: err });
    // ABORTED here: the fill gave the page up while this reader still waited (the worker is stopping).
    return this.asWorkerMeant(member, toFanoutError(err));
  }
}
