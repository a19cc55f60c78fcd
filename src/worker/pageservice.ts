import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { pageKey, pageSpan } from '../core/pages.js';
import type { Member, PageRef } from '../core/types.js';
import { FanoutError } from '../core/errors.js';
import { CHECKSUM_HEADER, ERROR_TRAILER, errorTrailers, type PageFetcher, type Placement } from '../lib/cluster/index.js';
import type { PageStore } from '../lib/pagestore/index.js';
import type { PageFill } from '../lib/transfer/index.js';
import { Semaphore, SingleFlight } from '../lib/transfer/index.js';
import { BufferPool } from '../lib/pagestore/index.js';
import type { Ufs } from '../lib/ufs/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import { sendChunks } from './http.js';
import { contentMatches } from './content.js';
import { PeerLiveness } from './peerliveness.js';
import type { SourceBudget } from './sourcebudget.js';

export interface PageServiceDeps {
  store: PageStore;
  ufs: (mount: string) => Ufs;
  budget: SourceBudget;
  metrics: WorkerMetrics;
  pageSize: number;
  /** This worker's member id, and the ring it shares with every client and worker. */
  selfId: string;
  placement: () => Placement;
  /** Copies of each page the cluster keeps: the first `replication` ring owners hold it. */
  replication: number;
  /** Reaches the page's owner when this worker is not it. */
  peers: PageFetcher;
  logger: Logger;
  /** Aborted when the worker stops, ending every source read. */
  signal: AbortSignal;
  /** Told of every page stored after a fill (pin and TTL rules by path). */
  onStored?: (key: string, ref: PageRef) => void;
}

/**
 * Answers page requests: from the store when the page is there (checksum verified first),
 * otherwise from a single-flight fill that streams to every waiter as bytes arrive and lands in
 * the store only once complete and whole. A fill reads the source only on the page's primary
 * owner: replicas and non-owners fill from the primary, so however many workers are asked for
 * a page, the source is read once for it in the whole cluster (cluster-wide single flight).
 */
export class PageService {
  readonly flights: SingleFlight;
  /**
   * Page buffers held at once, for hits being sent and for fills being received: however many
   * readers arrive, the worker's memory stays bounded and the excess waits its turn.
   */
  private readonly hitSlots: Semaphore;
  private readonly fillSlots: Semaphore;
  /** Relays from a stopped owner give up and read the source (see PeerLiveness). */
  private readonly liveness: PeerLiveness;

  constructor(private readonly deps: PageServiceDeps) {
    const slots = Math.max(2, Math.floor(PAGE_MEMORY / deps.pageSize / 2));
    this.hitSlots = new Semaphore(slots);
    this.fillSlots = new Semaphore(slots);
    this.flights = new SingleFlight(new BufferPool(deps.pageSize, slots));
    this.liveness = new PeerLiveness((member) => deps.peers.probe(member, 2000), { signal: deps.signal });
  }

  /** `direct`: read the source here even if another worker owns the page (hedges, failover). */
  async serve(res: ServerResponse, ref: PageRef, direct = false): Promise<void> {
    const { pageSize, store, metrics } = this.deps;
    const { start, end } = pageSpan(ref.index, ref.size, pageSize);
    const key = pageKey(ref, pageSize);
    if (!this.flights.get(key) && store.has(key)) {
      const releaseSlot = await this.hitSlots.acquire();
      res.once('close', releaseSlot);
      const page = await store.get(key);
      if (page) {
        metrics.hits.inc();
        metrics.bytesServed.inc(page.data.length);
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': page.data.length,
          [CHECKSUM_HEADER]: hex(page.crc),
          'x-fanout-cache': 'hit',
        });
        res.end(page.data, () => page.release());
        return;
      }
      res.off('close', releaseSlot);
      releaseSlot();
    }
    metrics.misses.inc();
    const fill = this.joinFill(key, ref, start, end - start, direct);
    await this.streamFill(res, fill);
  }

  private joinFill(key: string, ref: PageRef, start: number, length: number, direct: boolean): PageFill {
    const { store, metrics, logger, selfId } = this.deps;
    const owners = this.deps.placement().owners(key, this.deps.replication);
    const primary = owners[0];
    const fromPeer = !direct && primary !== undefined && primary.id !== selfId;
    // Non-owners relay without keeping a copy: the page's home is its owners.
    // A page read from the source because its owner is down is kept too: readers that route
    // around the owner come here next.
    let keep = !fromPeer || owners.some((m) => m.id === selfId);
    const ownerDown = () => void (keep = true);
    const { fill, started } = this.flights.join(
      key,
      length,
      () => this.holdingFillSlot(() => (fromPeer ? this.peerChunks(primary, ref, start, length, ownerDown) : this.sourceChunks(ref, start, length))),
      async (done) => {
        if (!keep) return;
        try {
          if (!contentMatches(ref, done.buffer)) {
            logger.warn({ key, mount: ref.mount, path: ref.path, page: ref.index }, 'page read for a content hash does not have that hash; not stored');
            return;
          }
          await store.put(key, done.buffer, done.crc);
          this.deps.onStored?.(key, ref);
        } catch (err) {
          logger.warn({ err, key }, 'page read from source could not be stored; served uncached');
        }
      },
    );
    if (started) {
      fill.settled.then(() => {
        if (fill.error && fill.error.code !== 'NOT_FOUND' && fill.error.code !== 'SOURCE_CHANGED') {
          logger.warn({ code: fill.error.code, err: fill.error.message, mount: ref.mount, path: ref.path, page: ref.index }, 'source read failed');
        }
      });
    }
    return fill;
  }

  private async *holdingFillSlot(chunks: () => AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
    const release = await this.fillSlots.acquire();
    try {
      yield* chunks();
    } finally {
      release();
    }
  }

  private async *sourceChunks(ref: PageRef, start: number, length: number): AsyncGenerator<Buffer> {
    const { budget, metrics, signal } = this.deps;
    const counter = metrics.bytesFromSource.labels(ref.mount);
    metrics.sourceReads.inc();
    const stream = this.deps.ufs(ref.mount).read(ref.path, ref.version, start, length, signal);
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      await budget.take(ref.mount, chunk.length, signal);
      counter.inc(chunk.length);
      yield chunk;
    }
  }

  /**
   * The page from its primary owner, as it arrives there. If the owner cannot be reached, or
   * drops the connection part-way, the rest comes from the source, so a dead owner costs a
   * retry, not a failed read. A checksum failure is not papered over: the fill fails.
   */
  private async *peerChunks(owner: Member, ref: PageRef, start: number, length: number, ownerDown: () => void): AsyncGenerator<Buffer> {
    const { peers, metrics, signal, logger } = this.deps;
    let received = 0;
    if (this.liveness.isKnownDead(owner)) {
      ownerDown();
      yield* this.sourceChunks(ref, start, length);
      return;
    }
    const watch = this.liveness.watch(owner, signal);
    try {
      const chunks = await peers.stream(owner, ref, length, { signal: watch.signal, direct: true, onProgress: watch.progress });
      for await (const chunk of chunks) {
        watch.progress();
        received += chunk.length;
        yield chunk;
      }
      metrics.peerBytes.inc(received);
      return;
    } catch (err) {
      if (!watch.ownerDead && (!(err instanceof FanoutError) || err.code !== 'WORKER_UNAVAILABLE')) throw err;
      logger.warn({ owner: owner.id, err: (err as Error).message, page: ref.index }, 'page owner unavailable; reading the source instead');
    } finally {
      watch.stop();
    }
    ownerDown();
    yield* this.sourceChunks(ref, start + received, length - received);
  }

  /**
   * Streams a fill to one reader; the checksum follows the body as a trailer. A fill that fails
   * after the headers left ends the body early with the failure's code as a trailer instead of
   * a cut connection, so the reader can tell a broken source from a dead worker.
   */
  private async streamFill(res: ServerResponse, fill: PageFill): Promise<void> {
    const { metrics } = this.deps;
    const gone = new AbortController();
    fill.hold();
    res.once('close', () => {
      gone.abort();
      fill.release(); // the response is flushed or dead: nothing references the buffer now
    });
    let failure: FanoutError | undefined;
    async function* counted(): AsyncGenerator<Buffer> {
      try {
        for await (const chunk of fill.chunks(gone.signal)) {
          metrics.bytesServed.inc(chunk.length);
          yield chunk;
        }
      } catch (err) {
        if (!res.headersSent || gone.signal.aborted) throw err;
        failure = err instanceof FanoutError ? err : new FanoutError('INTERNAL', String(err));
      }
    }
    // A HEAD answer has no body, so no chunked encoding to carry a trailer (node throws on one).
    const head = res.req?.method === 'HEAD';
    await sendChunks(
      res,
      counted(),
      () => res.writeHead(200, { 'content-type': 'application/octet-stream', ...(head ? {} : { trailer: `${CHECKSUM_HEADER}, ${ERROR_TRAILER}` }), 'x-fanout-cache': 'miss' }),
      () => head || res.addTrailers(failure ? errorTrailers(failure.code, failure.message) : { [CHECKSUM_HEADER]: hex(fill.crc) }),
    );
  }
}

/** Memory for page buffers in flight (half for hits, half for fills). */
const PAGE_MEMORY = 192 * 1024 * 1024;

function hex(crc: number): string {
  return crc.toString(16).padStart(8, '0');
}
