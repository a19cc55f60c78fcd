import { setMaxListeners } from 'node:events';
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { pageSpan } from '../core/pages.js';
import { pageKey } from '../lib/pagekey/index.js';
import type { PageRef } from '../core/types.js';
import { FanoutError } from '../core/errors.js';
import { type PageFetcher, type PageReporter, type Placement } from '../lib/cluster/index.js';
import type { PageStore, VerifiedPage } from '../lib/pagestore/index.js';
import type { PageFill } from '../lib/transfer/index.js';
import { Semaphore, SingleFlight } from '../lib/transfer/index.js';
import { BufferPool } from '../lib/pagestore/index.js';
import { releaseSourceChunk, type Ufs } from '../lib/ufs/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { Clock } from '../core/clock.js';
import { ResponseFlow } from './flow.js';
import { kernelSendable, wholePageHead } from './kernelsend.js';
import { FillFile } from './fillfile.js';
import { sendPath } from '../lib/sendfile/index.js';
import { chunkedByDefault, sendStored, sendStoredByKernel, sendWholeFill, streamFill, type PageSendDeps } from './pagesend.js';
import { SMALL_IDLE_BYTES, SMALL_WHOLE_READ } from './smallfill.js';
import { FillSupply, fillSlots, type FillClass } from './fillsupply.js';
import { FirstByteWait } from './fillwait.js';
import { commitFill } from './fillcommit.js';
import { tellFilling } from './fillingnotice.js';

export { PAGE_HOLD_MS } from './pagesend.js';
import type { SourceBudget } from './sourcebudget.js';
import type { TrafficClass } from '../lib/lines/index.js';
import { containerShare } from '../lib/memory/index.js';

export interface PageServiceDeps {
  store: PageStore;
  ufs: (mount: string) => Ufs;
  budget: SourceBudget;
  metrics: WorkerMetrics;
  pageSize: number;
  /** This worker's member id, and the ring it shares with every client and worker. */
  selfId: string;
  /**
   * False while another running worker holds selfId (membership `id-taken`): the ring's member of
   * that id is the other worker, so its pages are relayed there, not read from the source here
   * as the owner (a second source read of each; found by a fault hunt). Absent: always true.
   */
  holdsOwnId?: () => boolean;
  placement: () => Placement;
  /** Copies of each page the cluster keeps: the first `replication` ring owners hold it. */
  replication: number;
  /** Reaches the page's owner when this worker is not it. */
  peers: PageFetcher;
  /** Tells an owner that a page it sent a relay failed its checksum (see FillSupply). */
  reporter?: PageReporter;
  logger: Logger;
  /** Aborted when the worker stops, ending every source read. */
  signal: AbortSignal;
  /** Told of every page about to be stored after a fill (pin and TTL rules by path); see FillCommitDeps. */
  onStoring?: (key: string, ref: PageRef) => Promise<void>;
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
  /**
   * Batch answers (POST /v1/pages) at once: at most half the response slots, taken before the
   * request body is read. A batch holds its response slot while its client reads, so clients that
   * stop reading could otherwise take every slot and stall every page and range read; bodies
   * read and parsed before that wait grew the heap by 1 MiB per connection (batchpages.ts).
   */
  readonly batchSlots: Semaphore;
  /** Where fills' bytes come from (the source or the page's owner) and the slots they wait for. */
  private readonly supply: FillSupply;
  /** What the senders of stored pages and fills need (pagesend.ts). */
  private readonly sending: PageSendDeps;
  /** The traffic class of each fill in flight (a read joining a preload fill raises it). */
  private readonly fillClasses = new Map<string, FillClass>();
  /**
   * Each fill's page file, written as it arrives, which waiters on plain sockets are sent from by
   * the kernel (fillfile.ts). Only where the kernel path is on and for pages this worker keeps:
   * otherwise waiters are written by JS and the page is stored once whole, as before.
   */
  private readonly fillFiles = new WeakMap<PageFill, FillFile>();
  // FANOUT_NO_FILL_FOLLOW=1 sends fills by JS while hits still leave by the kernel (to measure one against the other).
  private readonly spooling = sendPath() === 'sendfile' && process.env.FANOUT_NO_FILL_FOLLOW !== '1';

  constructor(private readonly deps: PageServiceDeps) {
    const slots = fillSlots(deps.pageSize);
    // In a container, responses lend at most an eighth of its limit (lib/memory/container.ts).
    this.responseSlots = new Semaphore(Math.max(2, Math.floor(containerShare(deps.limits.responseMemory) / deps.pageSize)));
    this.batchSlots = new Semaphore(Math.floor(this.responseSlots.size / 2));
    // Keeps a free buffer for every fill slot (at most the fill memory, 96 MiB): with 4, a cold
    // burst of 8 fills per mount allocated fresh 4 MiB buffers (faulting in page by page) and
    // dropped them, and the garbage started a full collection each 32 MiB (lib/memory/reclaim.ts).
    // Lab, cold phase, A/B alternated twice: 33.9/32.0 s with 4, 29.5/28.8 s with one per slot,
    // workers' CPU 22.6/22.8 → 20.0/19.7 s, worker peak RSS 154 → 159 MiB. An idle worker may keep
    // them: bounded by the same 96 MiB the fills may use at any time (above the reclaimer's 64 MiB
    // floor, that costs an idle worker one collection every 10 s, a few ms each).
    // Small pages' buffers are reused too (up to 8 MiB idle): a run of cold small files otherwise
    // allocated a fresh buffer per fill.
    // Chunks from sources and from peers are views of pooled read memory: once a fill has copied
    // one into its page nothing reads it again (peer chunks are checksummed before they are
    // yielded), so it is given back to be read into again rather than left to the collector.
    const releaseChunk = (chunk: Buffer) => {
      releaseSourceChunk(chunk);
      deps.peers.release(chunk);
    };
    // Fills stop with the worker: their signal is all a source read or a relay listens to.
    this.flights = new SingleFlight(new BufferPool(deps.pageSize, slots, SMALL_IDLE_BYTES), releaseChunk, deps.signal);
    // Waits of their own listen on the stop signal too (peer watches, admin calls), as many as run.
    setMaxListeners(0, deps.signal);
    this.sending = { store: deps.store, metrics: deps.metrics, responseSlots: this.responseSlots, clientIdle: deps.limits.clientIdle };
    this.supply = new FillSupply({ ...deps, fillsPerMount: deps.limits.fillsPerMount });
  }

  /** A writer for one response that holds at most RESPONSE_ALLOWANCE of its client's bytes. */
  flow(res: ServerResponse): ResponseFlow {
    return new ResponseFlow(res, { clock: this.deps.clock, idleMs: this.deps.limits.clientIdle, allowance: RESPONSE_ALLOWANCE });
  }

  /**
   * `direct`: read the source here even if another worker owns the page (hedges, failover).
   * `cls`: a read a client waits for, or a preload, which a line serves after waiting reads.
   */
  async serve(res: ServerResponse, ref: PageRef, direct = false, cls: TrafficClass = 'read'): Promise<void> {
    const { pageSize, store, metrics } = this.deps;
    const { start, end } = pageSpan(ref.index, ref.size, pageSize);
    const key = pageKey(ref, pageSize);
    // Watched before any wait, so a client that leaves while queued gives up its place.
    const gone = new AbortController();
    // Only a response cut short needs its error: one per finished response (every small file's
    // page) was a stack capture per request in the worker's profile.
    res.once('close', () => res.writableFinished || gone.abort(new FanoutError('ABORTED', 'client went away')));
    const stored = !this.flights.get(key) && store.has(key);
    const byKernel = stored && kernelSendable(res);
    if (byKernel && (await sendStoredByKernel(this.sending, res, key, gone))) return;
    // Only a response written from JS needs a flow (a 'close' listener and its state): not a hit
    // the kernel sends, which is most requests of a warm cluster.
    const flow = this.flow(res);
    if (stored && !byKernel) {
      const sent = await sendStored(this.sending, res, key, flow, gone.signal, 0, (page) => {
        metrics.hits.inc();
        metrics.bytesServed.inc(page.data.length);
        res.writeHead(200, wholePageHead(page.data.length, page.crc, 'hit'));
      });
      if (sent) return;
    }
    if (res.req?.method !== 'HEAD' && !chunkedByDefault(res)) {
      // HTTP/1.0: no chunks, so no checksum trailer; the verified page goes whole (wholePage counts the miss).
      return sendWholeFill(res, await this.wholePage(ref, direct, cls, gone.signal), flow);
    }
    metrics.misses.inc();
    const fill = this.joinFill(key, ref, start, end - start, direct, cls);
    const stopTelling = tellFilling(res);
    try {
      await streamFill(this.sending, res, key, fill, flow, gone.signal, this.fillFiles.get(fill));
    } finally {
      stopTelling();
    }
  }

  /**
   * A stored page read into memory the caller gives (`into(size)`), verified, for a batch answer's
   * warm item; undefined when the page is not stored or a fill of it runs (then wholePage).
   */
  async readStored(ref: PageRef, into: (size: number) => Buffer): Promise<{ data: Buffer; crc: number } | undefined> {
    const { pageSize, store, metrics } = this.deps;
    const key = pageKey(ref, pageSize);
    if (this.flights.get(key) || !store.has(key)) return undefined;
    const page = await store.readInto(key, into);
    if (page) {
      metrics.hits.inc();
      metrics.bytesServed.inc(page.data.length);
    }
    return page;
  }

  /**
   * A whole page in memory, for a batch answer (batchpages.ts): the stored copy (verified as it
   * is read) or the single-flight fill that /v1/page readers of the same page join, under the
   * same fill limits. The caller calls release() once it has written the bytes out.
   * `firstByteMs`: how long a cold page may wait for its fill's first byte (the worker's own
   * reads, worker/localpages.ts: what timeouts.peerFilling bounds for a request to a worker).
   */
  async wholePage(ref: PageRef, direct: boolean, cls: TrafficClass, signal: AbortSignal, firstByteMs?: number): Promise<VerifiedPage> {
    const { pageSize, store, metrics } = this.deps;
    const { start, end } = pageSpan(ref.index, ref.size, pageSize);
    const key = pageKey(ref, pageSize);
    if (!this.flights.get(key) && store.has(key)) {
      const page = await store.get(key);
      if (page) {
        metrics.hits.inc();
        metrics.bytesServed.inc(page.data.length);
        return page;
      }
    }
    metrics.misses.inc();
    const fill = this.joinFill(key, ref, start, end - start, direct, cls);
    fill.enter();
    fill.hold();
    // Only a fill with no byte yet: one that brings bytes is bounded by the source's own deadlines.
    const wait = firstByteMs !== undefined && fill.received === 0 && !fill.done && !fill.error ? new FirstByteWait(signal, firstByteMs) : undefined;
    try {
      for await (const _ of fill.chunks(wait?.signal ?? signal)) wait?.arrived();
    } catch (err) {
      fill.release();
      throw wait?.expired ? wait.error(this.deps.selfId, `page ${ref.index} of /${ref.mount}/${ref.path}`) : err;
    } finally {
      wait?.end();
      fill.leave();
    }
    metrics.bytesServed.inc(fill.length);
    return { data: fill.buffer.subarray(0, fill.length), crc: fill.crc, release: () => fill.release() };
  }

  private joinFill(key: string, ref: PageRef, start: number, length: number, direct: boolean, cls: TrafficClass): PageFill {
    const { store, logger } = this.deps;
    const selfId = this.deps.holdsOwnId?.() === false ? undefined : this.deps.selfId;
    // A peer whose ring still lists this worker asks it to read the source. Out of the ring it
    // applies no share of any line (SourceBudget), so such a read would wait until the id is
    // back, and on a mount without a line it would read a page the id's holder reads too. The
    // refusal sends the asker to the source itself at once (a relay's owner_unreachable).
    if (direct && selfId === undefined) {
      throw new FanoutError('WORKER_UNAVAILABLE', `worker ${this.deps.selfId} is in no ring (another running worker holds its id): it reads no source for peers`);
    }
    const owners = this.deps.placement().owners(key, this.deps.replication);
    const primary = owners[0];
    const fromPeer = !direct && primary !== undefined && primary.id !== selfId;
    // Non-owners relay without keeping a copy: the page's home is its owners.
    // A page read from the source because its owner is down is kept too: readers that route
    // around the owner come here next.
    let keep = !fromPeer || owners.some((m) => m.id === selfId);
    const ownerDown = () => void (keep = true);
    // A preload fill that a reader joins becomes a read: the reader must not wait behind preloads.
    const joined = this.fillClasses.get(key);
    if (joined && cls === 'read') joined.cls = 'read';
    const fillClass = joined ?? { cls };
    const { fill, started } = this.flights.join(
      key,
      length,
      (abandoned, fill) =>
        fromPeer
          ? this.supply.relayed(primary, ref, start, length, abandoned, ownerDown, fillClass, fill)
          : this.supply.fromSource(ref, start, length, abandoned, fillClass, fill),
      (done) => commitFill(this.deps, key, ref, done, keep, this.fillFiles.get(done)),
    );
    // Only a page this worker keeps: its file's write replaces the store's, while a relay's page
    // would be written to disk only to be sent from (a copy more than writing it to its waiter).
    // Not a small page either: it arrives in one read, and one thread-pool job stores it (smallio),
    // where a spool takes an open, writes, a close and a rename, each a hand-off.
    if (started && this.spooling && keep && length > SMALL_WHOLE_READ) this.fillFiles.set(fill, new FillFile(fill, () => store.spool(key, length)));
    if (started) {
      this.fillClasses.set(key, fillClass);
      void fill.settled.then(() => {
        if (this.fillClasses.get(key) === fillClass) this.fillClasses.delete(key);
      });
      fill.origin = { mount: ref.mount, path: ref.path, index: ref.index, from: fromPeer ? 'peer' : 'source' };
      fill.settled.then(() => {
        if (fill.signal.aborted) return; // abandoned by its readers: nobody to tell
        // A source's fault is worth a line; what the request got wrong (a size or version the file
        // does not have, a path outside the mount) is the client's, and one batch carried 512 of
        // those (found by a fault hunt: a line per item, from an unauthenticated request).
        if (fill.error && fill.error.status >= 500) {
          logger.warn({ code: fill.error.code, err: fill.error.message, mount: ref.mount, path: ref.path, page: ref.index }, 'source read failed');
        }
      });
    }
    return fill;
  }

  /** Whether a fill of this page checks the file's version and size at the source itself (see FillSupply.checksOnFill). */
  checksOnFill(ref: PageRef): boolean {
    return this.supply.checksOnFill(ref);
  }
}
