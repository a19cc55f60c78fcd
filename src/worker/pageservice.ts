import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { pageKey, pageSpan } from '../core/pages.js';
import type { Member, PageRef } from '../core/types.js';
import { FanoutError } from '../core/errors.js';
import { CHECKSUM_HEADER, ERROR_TRAILER, errorTrailers, type PageFetcher, type Placement } from '../lib/cluster/index.js';
import { HEADERS } from '../lib/wire/index.js';
import type { PageStore, VerifiedPage } from '../lib/pagestore/index.js';
import type { PageFill } from '../lib/transfer/index.js';
import { Semaphore, SingleFlight } from '../lib/transfer/index.js';
import { BufferPool } from '../lib/pagestore/index.js';
import type { Ufs } from '../lib/ufs/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { Clock } from '../core/clock.js';
import { ResponseFlow } from './flow.js';
import { contentMatches } from './content.js';
import { PeerLiveness } from './peerliveness.js';
import { kernelSendable, sendPageFile } from './kernelsend.js';
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
  limits: ResponseLimits & { fillsPerMount: number };
  clock: Clock;
}

/** What a response may hold of the worker, whatever its client does. */
export interface ResponseLimits {
  /** Page buffers lent to responses at once, in bytes (hits and /v1/data pages). */
  responseMemory: number;
  /** A response whose client takes no byte for this long is destroyed. */
  clientIdle: number;
}

/** Bytes one response may queue in user space before waiting for its client. */
export const RESPONSE_ALLOWANCE = 128 * 1024;
/**
 * How long a response whose client is not keeping up may keep a page buffer while it waits.
 * Past it the page goes back (and is read again when the client has taken its queued bytes):
 * a client reading a page in under a second never pays that, a slow one holds only its queue.
 */
export const PAGE_HOLD_MS = 1000;

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
  readonly responseSlots: Semaphore;
  private readonly fillSlots: Semaphore;
  /** Relays from a stopped owner give up and read the source (see PeerLiveness). */
  private readonly liveness: PeerLiveness;
  /** Fills in flight per mount: a slow source queues its own fills, not other mounts'. */
  private readonly mountFills = new Map<string, Semaphore>();

  constructor(private readonly deps: PageServiceDeps) {
    const slots = Math.max(2, Math.floor(FILL_MEMORY / deps.pageSize));
    this.responseSlots = new Semaphore(Math.max(2, Math.floor(deps.limits.responseMemory / deps.pageSize)));
    this.fillSlots = new Semaphore(slots);
    // Keeps a few buffers for the next fills, not one per slot: an idle worker holds little
    // (4, not 8: 16 MiB less resident after a cold read, counted against limits under load).
    this.flights = new SingleFlight(new BufferPool(deps.pageSize, Math.min(slots, 4)));
    this.liveness = new PeerLiveness((member) => deps.peers.probe(member, 2000), { signal: deps.signal });
  }

  /** A writer for one response that holds at most RESPONSE_ALLOWANCE of its client's bytes. */
  flow(res: ServerResponse): ResponseFlow {
    return new ResponseFlow(res, { clock: this.deps.clock, idleMs: this.deps.limits.clientIdle, allowance: RESPONSE_ALLOWANCE });
  }

  /** `direct`: read the source here even if another worker owns the page (hedges, failover). */
  async serve(res: ServerResponse, ref: PageRef, direct = false): Promise<void> {
    const { pageSize, store, metrics } = this.deps;
    const { start, end } = pageSpan(ref.index, ref.size, pageSize);
    const key = pageKey(ref, pageSize);
    // Watched before any wait, so a client that leaves while queued gives up its place.
    const gone = new AbortController();
    res.once('close', () => gone.abort(new FanoutError('ABORTED', 'client went away')));
    const flow = this.flow(res);
    if (!this.flights.get(key) && store.has(key) && kernelSendable(res)) {
      if (await this.sendStoredByKernel(res, key, gone.signal)) return;
    } else if (!this.flights.get(key) && store.has(key)) {
      const sent = await this.sendStored(res, key, flow, gone.signal, 0, (page) => {
        metrics.hits.inc();
        metrics.bytesServed.inc(page.data.length);
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': page.data.length,
          [CHECKSUM_HEADER]: hex(page.crc),
          'x-fanout-cache': 'hit',
        });
      });
      if (sent) return;
    }
    metrics.misses.inc();
    const fill = this.joinFill(key, ref, start, end - start, direct);
    const stopTelling = this.tellFilling(res);
    try {
      await this.streamFill(res, key, fill, flow, gone.signal);
    } finally {
      stopTelling();
    }
  }

  /**
   * A reader that asked is told now, and again every FILLING_NOTICE_MS until the headers leave,
   * that its page is being filled (its first byte may wait for a fill slot and the source
   * budget): it neither hedges a page whose fill another worker would only relay, nor gives up
   * on a worker that is alive but queued (each 102 restarts its first-byte deadline).
   */
  private tellFilling(res: ServerResponse): () => void {
    const req = res.req;
    if (req?.headers[HEADERS.progress] !== '1' || req.httpVersionMajor !== 1 || req.httpVersionMinor < 1) return () => {};
    const tell = () => {
      if (res.headersSent || res.writableEnded || res.destroyed) return clearInterval(timer);
      res.writeProcessing();
    };
    const timer = setInterval(tell, FILLING_NOTICE_MS).unref();
    tell();
    return () => clearInterval(timer);
  }

  /**
   * Sends a stored page from byte `from` on. The verified page is held (with a response slot)
   * only while the client takes bytes or nobody else waits for a slot: a slow client gives its
   * page back and reads it again from the store when its socket has room, so slow clients
   * cannot hold every slot. Returns false if the page is not in the store when first asked.
   */
  private async sendStored(
    res: ServerResponse,
    key: string,
    flow: ResponseFlow,
    signal: AbortSignal,
    from: number,
    onFirst?: (page: VerifiedPage) => void,
    onEnd: () => void = () => {},
  ): Promise<boolean> {
    let offset = from;
    let first = true;
    while (true) {
      const releaseSlot = await this.responseSlots.acquire(signal);
      let page: VerifiedPage | undefined;
      try {
        page = await this.deps.store.get(key);
        if (!page) {
          if (first && onFirst) return false;
          throw new FanoutError('INTERNAL', 'page left the store while it was being sent');
        }
        if (first) onFirst?.(page);
        first = false;
        const since = flow.now();
        while (offset < page.data.length) {
          offset = flow.write(page.data, offset, page.data.length);
          if (offset === page.data.length) break;
          // Others need the slot, or this client is slow: give the page back while it catches up.
          if (this.responseSlots.waiting > 0 || flow.now() - since >= PAGE_HOLD_MS) break;
          await flow.room();
        }
        if (offset >= page.data.length) {
          onEnd();
          res.end();
          return true;
        }
      } finally {
        page?.release();
        releaseSlot();
      }
      await flow.room();
    }
  }

  /**
   * A hit sent from the page file by the kernel (see kernelsend.ts). A response slot is held only
   * while the page may be read into a buffer (checked after a restart or a write to its file): the send
   * itself holds no page memory, so a client that stops reading holds no slot (it would otherwise
   * keep hits waiting for clientIdle); it holds its connection until clientIdle cuts it. The
   * page's bytes are not otherwise read here on a hit (readers check the checksum end to end).
   * Returns false if the page left the store before it was opened.
   */
  private async sendStoredByKernel(res: ServerResponse, key: string, signal: AbortSignal): Promise<boolean> {
    const { store, metrics } = this.deps;
    const releaseSlot = await this.responseSlots.acquire(signal);
    let page;
    try {
      page = await store.openForSend(key);
    } finally {
      releaseSlot();
    }
    if (!page) return false;
    try {
      metrics.hits.inc();
      metrics.bytesServed.inc(page.size);
      await sendPageFile(res, page, this.deps.limits.clientIdle);
      return true;
    } finally {
      await page.close();
    }
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
      (abandoned) =>
        this.holdingFillSlot(ref.mount, abandoned, (signal) =>
          fromPeer ? this.peerChunks(primary, ref, start, length, signal, ownerDown) : this.sourceChunks(ref, start, length, signal),
        ),
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
      fill.origin = { mount: ref.mount, path: ref.path, index: ref.index, from: fromPeer ? 'peer' : 'source' };
      fill.settled.then(() => {
        if (fill.signal.aborted) return; // abandoned by its readers: nobody to tell
        if (fill.error && fill.error.code !== 'NOT_FOUND' && fill.error.code !== 'SOURCE_CHANGED') {
          logger.warn({ code: fill.error.code, err: fill.error.message, mount: ref.mount, path: ref.path, page: ref.index }, 'source read failed');
        }
      });
    }
    return fill;
  }

  /**
   * Runs a fill under its mount's slot, then a memory slot (in that order, so a slow mount's
   * queue holds no memory slot). Waits and reads end when the worker stops or every reader left.
   */
  private async *holdingFillSlot(mount: string, abandoned: AbortSignal, chunks: (signal: AbortSignal) => AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
    const signal = AbortSignal.any([this.deps.signal, abandoned]);
    const releaseMount = await this.mountSlots(mount).acquire(signal);
    try {
      const release = await this.fillSlots.acquire(signal);
      try {
        yield* chunks(signal);
      } finally {
        release();
      }
    } finally {
      releaseMount();
    }
  }

  private mountSlots(mount: string): Semaphore {
    let slots = this.mountFills.get(mount);
    if (!slots) this.mountFills.set(mount, (slots = new Semaphore(Math.max(1, this.deps.limits.fillsPerMount))));
    return slots;
  }

  private async *sourceChunks(ref: PageRef, start: number, length: number, signal: AbortSignal): AsyncGenerator<Buffer> {
    const { budget, metrics } = this.deps;
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
  private async *peerChunks(owner: Member, ref: PageRef, start: number, length: number, signal: AbortSignal, ownerDown: () => void): AsyncGenerator<Buffer> {
    const { peers, metrics, logger } = this.deps;
    let received = 0;
    if (this.liveness.isKnownDead(owner)) {
      ownerDown();
      yield* this.sourceChunks(ref, start, length, signal);
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
    yield* this.sourceChunks(ref, start + received, length - received, signal);
  }

  /**
   * Streams a fill to one reader as it arrives; the checksum follows the body as a trailer. A
   * reader slower than the fill continues from the store once the page is there, so it does
   * not keep the fill's buffer. A reader that leaves may cancel the fill (PageFill.leave). A
   * fill that fails after the headers left ends the body early with the failure's code as a
   * trailer instead of a cut connection, so the reader can tell a broken source from a dead worker.
   */
  private async streamFill(res: ServerResponse, key: string, fill: PageFill, flow: ResponseFlow, signal: AbortSignal): Promise<void> {
    const { metrics, store } = this.deps;
    fill.enter();
    let inside = true;
    const leave = () => {
      if (inside) fill.leave();
      inside = false;
    };
    fill.hold();
    let holding = true;
    const letGo = () => {
      if (holding) fill.release();
      holding = false;
    };
    let offset = 0;
    let headed = false;
    // A HEAD answer has no body, so no chunked encoding to carry a trailer (node throws on one).
    const bodiless = res.req?.method === 'HEAD';
    const head = () => {
      if (headed) return;
      headed = true;
      res.writeHead(200, { 'content-type': 'application/octet-stream', ...(bodiless ? {} : { trailer: `${CHECKSUM_HEADER}, ${ERROR_TRAILER}` }), 'x-fanout-cache': 'miss' });
    };
    const trailer = () => bodiless || res.addTrailers({ [CHECKSUM_HEADER]: hex(fill.crc) });
    try {
      for await (const view of fill.chunks(signal)) {
        head();
        const viewEnd = offset + view.length;
        let at = 0;
        while (at < view.length) {
          at = flow.write(view, at, view.length);
          if (at === view.length) break;
          if (fill.done && store.has(key)) {
            // The page is stored: finish from there and let the fill's buffer go.
            metrics.bytesServed.inc(offset + at);
            letGo();
            leave();
            await this.sendStored(res, key, flow, signal, offset + at, undefined, trailer);
            return;
          }
          await flow.room();
        }
        offset = viewEnd;
      }
      head();
      metrics.bytesServed.inc(offset);
      trailer();
      res.end();
    } catch (err) {
      if (!headed || signal.aborted || bodiless) throw err;
      const failure = err instanceof FanoutError ? err : new FanoutError('INTERNAL', String(err));
      res.addTrailers(errorTrailers(failure.code, failure.message));
      res.end();
    } finally {
      leave();
      letGo();
    }
  }
}

/** How often a reader waiting for a page being filled is told so (well inside its 30 s first-byte deadline). */
export const FILLING_NOTICE_MS = 5_000;

/** Memory for the page buffers of fills in flight (what the source or a peer is writing into). */
const FILL_MEMORY = 96 * 1024 * 1024;

function hex(crc: number): string {
  return crc.toString(16).padStart(8, '0');
}
