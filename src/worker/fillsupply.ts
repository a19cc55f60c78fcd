import type { Member, PageRef } from '../core/types.js';
import { pageSpan } from '../core/pages.js';
import { FanoutError } from '../core/errors.js';
import type { PageFetcher, PageReporter } from '../lib/cluster/index.js';
import { ByteBudget, type PageFill } from '../lib/transfer/index.js';
import { releaseSourceChunk, type Ufs } from '../lib/ufs/index.js';
import { containerShare } from '../lib/memory/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { TrafficClass } from '../lib/lines/index.js';
import type { Logger } from 'pino';
import { PeerLiveness } from './peerliveness.js';
import { readSmallPage, SMALL_WHOLE_READ } from './smallfill.js';
import type { SourceBudget } from './sourcebudget.js';

/**
 * Where a fill's bytes come from, and under which limits: the source (under its mount's fill slot,
 * a share of the fills' memory and the line budget), or the page's owner (under the relays' own
 * memory), falling back to the source when the owner is down. The page service decides which one
 * a fill uses and what becomes of its bytes; this module owns the slots those reads wait for.
 */
export interface FillSupplyDeps {
  ufs: (mount: string) => Ufs;
  budget: SourceBudget;
  metrics: WorkerMetrics;
  pageSize: number;
  peers: PageFetcher;
  /**
   * Tells a page's owner that a page it sent failed its checksum (lib/cluster/report.ts), as a
   * reader does. Absent: relays report nothing.
   */
  reporter?: PageReporter;
  logger: Logger;
  /** Aborted when the worker stops, ending every wait and read. */
  signal: AbortSignal;
  /** Whole pages of source reads in flight per mount. */
  fillsPerMount: number;
}

/** The traffic class of a fill in flight, shared with readers that join it (one may raise it). */
export type FillClass = { cls: TrafficClass };

export class FillSupply {
  private readonly fillMemory: ByteBudget;
  /** Page buffers of relays from owners, apart from fillMemory (see relayed). */
  private readonly relayMemory = new ByteBudget(RELAY_MEMORY);
  /** Relays from a stopped owner give up and read the source (see PeerLiveness). */
  private readonly liveness: PeerLiveness;
  /**
   * Fills in flight per mount: a slow source queues its own fills, not other mounts'. Counted in
   * bytes (fillsPerMount whole pages), a small page as at least 1/SMALL_FILLS_PER_PAGE of one: a
   * release of 64 KiB files keeps 8× as many source reads going as one of 4 MiB pages, instead of
   * 8 round trips to the source at a time.
   */
  private readonly mountFills = new Map<string, ByteBudget>();

  constructor(private readonly deps: FillSupplyDeps) {
    // The buffer a fill takes is its page's length: bytes, not a count of whole pages.
    this.fillMemory = new ByteBudget(fillSlots(deps.pageSize) * deps.pageSize);
    // A relay whose owner answers health checks but sends nothing of its page gives up before a
    // reader that hedged here does (PeerLiveness's STALL_SHARE of the same peer deadlines).
    const { firstByteMs, idleMs } = deps.peers.timeouts;
    this.liveness = new PeerLiveness((member, deadlineMs) => deps.peers.probe(member, deadlineMs), { signal: deps.signal, stall: { firstByteMs, idleMs } });
  }

  /** A fill's bytes read from the source here, under its mount's slot and a memory slot. */
  fromSource(ref: PageRef, start: number, length: number, stop: AbortSignal, fillClass: FillClass, fill: PageFill): AsyncGenerator<Buffer> {
    return this.holdingFillSlot(ref.mount, length, stop, (signal) => this.sourceChunks(ref, start, length, signal, fillClass, fill));
  }

  /** A fill's bytes relayed from the page's primary owner; ownerDown() is called if the source is read instead. */
  relayed(owner: Member, ref: PageRef, start: number, length: number, stop: AbortSignal, ownerDown: () => void, fillClass: FillClass, fill: PageFill): AsyncGenerator<Buffer> {
    return this.holdingRelaySlot(length, stop, (signal) => this.peerChunks(owner, ref, start, length, signal, ownerDown, fillClass, fill));
  }

  /**
   * Whether a fill of this page checks the file's version and size at the source itself, on the
   * open file, before a byte is kept (a small whole page of a source that reads in one step): the
   * page route then needs no separate stat of the file first (see Routes.checkPage).
   */
  checksOnFill(ref: PageRef): boolean {
    const { start, end } = pageSpan(ref.index, ref.size, this.deps.pageSize);
    return end - start <= SMALL_WHOLE_READ && this.deps.ufs(ref.mount).readInto !== undefined;
  }

  /**
   * Runs a source fill under its mount's slot, then a memory slot (in that order, so a slow
   * mount's queue holds no memory slot).
   */
  private holdingFillSlot(mount: string, length: number, stop: AbortSignal, chunks: (signal: AbortSignal) => AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
    return this.holding([[this.mountSlots(mount), this.mountShare(length)], [this.fillMemory, Math.max(length, 1)]], stop, chunks);
  }

  /**
   * Runs a relay from the page's owner under a memory slot of the relays' own: a relay reads no
   * source here, so it neither takes a mount's fill slot nor queues behind this worker's own
   * source fills (the owner bounds its source reads). If the owner is down, the relay reads the
   * source under the mount's slot like any fill (sourceFallback).
   */
  private holdingRelaySlot(length: number, stop: AbortSignal, chunks: (signal: AbortSignal) => AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
    return this.holding([[this.relayMemory, Math.max(length, 1)]], stop, chunks);
  }

  /**
   * Takes each slot in order, then runs the read; gives them back in reverse order when it ends.
   * `stop` is the fill's signal, which aborts when every reader left or the worker stops (the page
   * service's SingleFlight is made with the worker's stop signal): waits and reads end then.
   */
  private async *holding(slots: [ByteBudget, number][], stop: AbortSignal, chunks: (signal: AbortSignal) => AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
    const releases: (() => void)[] = [];
    try {
      for (const [budget, bytes] of slots) releases.push(await budget.acquire(bytes, stop));
      yield* chunks(stop);
    } finally {
      for (const release of releases.reverse()) release();
    }
  }

  private mountSlots(mount: string): ByteBudget {
    let slots = this.mountFills.get(mount);
    if (!slots) this.mountFills.set(mount, (slots = new ByteBudget(Math.max(1, this.deps.fillsPerMount) * this.deps.pageSize)));
    return slots;
  }

  /** What a read of `length` bytes takes of its mount's slots: a small page counts as a share of a whole one. */
  private mountShare(length: number): number {
    return Math.max(length, Math.ceil(this.deps.pageSize / SMALL_FILLS_PER_PAGE), 1);
  }

  private async *sourceChunks(ref: PageRef, start: number, length: number, signal: AbortSignal, fillClass: FillClass, fill: PageFill): AsyncGenerator<Buffer> {
    const { budget, metrics } = this.deps;
    const counter = metrics.bytesFromSource.labels(ref.mount);
    metrics.sourceReads.inc();
    const ufs = this.deps.ufs(ref.mount);
    const page = pageSpan(ref.index, ref.size, this.deps.pageSize);
    if (ufs.readInto && length > 0 && length <= SMALL_WHOLE_READ && start === page.start && length === page.end - page.start && fill.received === 0) {
      yield await readSmallPage(ufs.readInto.bind(ufs), ref, start, length, fill, signal, (bytes) => budget.take(ref.mount, bytes, signal, fillClass.cls));
      counter.inc(length);
      return;
    }
    // A paged source (another cluster) is asked for the page itself: its checksum, its content key.
    const whole = ufs.readPage !== undefined && start === page.start && length === page.end - page.start;
    const stream = whole ? ufs.readPage!(ref, this.deps.pageSize, signal) : ufs.read(ref.path, ref.version, start, length, signal);
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      await budget.take(ref.mount, chunk.length, signal, fillClass.cls);
      counter.inc(chunk.length);
      yield chunk;
    }
  }

  /**
   * The page from its primary owner, as it arrives there. If the owner cannot be reached, or
   * drops the connection part-way, the rest comes from the source, so a dead owner costs a
   * retry, not a failed read. So does a page that fails its checksum; it is not papered over:
   * the source must give the same bytes the owner sent, or the fill fails.
   */
  private async *peerChunks(
    owner: Member,
    ref: PageRef,
    start: number,
    length: number,
    signal: AbortSignal,
    ownerDown: () => void,
    fillClass: FillClass,
    fill: PageFill,
  ): AsyncGenerator<Buffer> {
    const { peers, metrics, logger } = this.deps;
    let received = 0;
    if (this.liveness.isKnownDead(owner) || this.liveness.isDistrusted(owner)) {
      ownerDown();
      yield* this.sourceFallback(this.liveness.isKnownDead(owner) ? 'owner_known_dead' : 'owner_corrupt', ref, start, length, signal, fillClass, fill);
      return;
    }
    const watch = this.liveness.watch(owner, signal);
    let otherPageSize = false;
    let corrupt = false;
    let fillingTooLong = false;
    try {
      const chunks = await peers.stream(owner, ref, length, { signal: watch.signal, direct: true, onProgress: watch.progress, preload: fillClass.cls === 'preload', pageSize: this.deps.pageSize });
      for await (const chunk of chunks) {
        watch.progress();
        received += chunk.length;
        yield chunk;
      }
      metrics.peerBytes.inc(received);
      return;
    } catch (err) {
      // An owner configured with another pageSize (joined the same etcd prefix) refuses every
      // page counted in ours before sending any byte. Passed on, the refusal failed every read of
      // its pages through every other worker although the source was there: it is read instead.
      // The owner is up, so it is not marked down; its refusals are counted on its side.
      otherPageSize = err instanceof FanoutError && err.code === 'PAGE_SIZE_MISMATCH' && received === 0;
      // A page that failed its checksum (or ran past its length) is the owner's fault, as a
      // reader takes it (lib/cluster/reader.ts). Thrown on, it failed every read of the page
      // through every other worker for as long as the owner sent it so, and the source was never
      // read (found by a fault hunt: a fake owner sending a wrong checksum header, 502 at every
      // /v1/data read). The source is read instead, checked against what the owner sent, and
      // the owner is skipped by relays for a while.
      corrupt = err instanceof FanoutError && err.code === 'CHECKSUM_MISMATCH';
      // An owner that said it was filling the page (102 Processing) for timeouts.peerFilling and
      // sent no head: read around it like a hung one (a stuck or hostile peer held each relay for
      // 10 min before, restarting the first-byte deadline with every 102).
      fillingTooLong = (err as { cause?: { code?: unknown } }).cause?.code === 'FANOUT_INTERIM_TIMEOUT';
      if (corrupt) {
        this.liveness.sentCorrupt(owner);
        this.reportCorrupt(owner, ref);
      }
      if (!otherPageSize && !corrupt && !watch.ownerDead && !watch.stalled && (!(err instanceof FanoutError) || err.code !== 'WORKER_UNAVAILABLE')) throw err;
      logger.warn({ owner: owner.id, err: (err as Error).message, page: ref.index }, otherPageSize ? 'page owner has another pageSize; reading the source instead' : corrupt ? 'page owner sent a page failing its checksum; reading the source instead' : 'page owner unavailable; reading the source instead');
    } finally {
      watch.stop();
    }
    if (otherPageSize) {
      yield* this.sourceFallback('owner_page_size', ref, start, length, signal, fillClass, fill);
      return;
    }
    ownerDown();
    const reason = corrupt ? 'owner_corrupt' : watch.ownerDead ? 'owner_silent' : watch.stalled ? 'owner_stalled' : fillingTooLong ? 'owner_filling_too_long' : 'owner_unreachable';
    if (received === 0) {
      yield* this.sourceFallback(reason, ref, start, length, signal, fillClass, fill);
      return;
    }
    // What the owner sent before it failed is not verified (its checksum covers the whole page,
    // checked once the body is whole), and the fill's waiters may have it already. The source is
    // read from the page's start and must give those same bytes, or the fill fails: a page made
    // of an owner's bad bytes and the source's rest would be stored under a checksum of its own,
    // and served as sound.
    yield* sameStart(fill.buffer.subarray(0, received), this.sourceFallback(reason, ref, start, length, signal, fillClass, fill));
  }

  /**
   * Tells the owner its page failed our checksum, as a reader does: it re-reads its copy and drops
   * it if corrupt, so its next read refetches it. A hit leaves the owner by sendfile unchecked, so
   * without this a page corrupted on its disk went on to every relay once their 30 s skip ended,
   * and to every client asking the owner itself (found by a fault hunt). The report is advice with
   * its own deadline (the reporter's, 5 s): the relay neither waits for it nor fails if it fails.
   * An owner that answers it dropped a corrupt copy is asked again at once (droppedCorrupt).
   */
  private reportCorrupt(owner: Member, ref: PageRef): void {
    const reporter = this.deps.reporter;
    if (!reporter) return;
    // report() never rejects; the catch keeps a broken reporter from becoming an unhandled rejection.
    reporter
      .report(owner, ref)
      .then((result) => {
        if (result === 'corrupt') this.liveness.droppedCorrupt(owner);
      })
      .catch(() => {});
  }

  /**
   * A relay reading the source itself because the owner is down: a second source read of the
   * page in the cluster, so it must be rare, and it is counted. It takes the mount's fill slot,
   * as any source read does.
   */
  private async *sourceFallback(reason: string, ref: PageRef, start: number, length: number, signal: AbortSignal, fillClass: FillClass, fill: PageFill): AsyncGenerator<Buffer> {
    this.deps.metrics.relaySourceReads.labels(reason).inc();
    const releaseMount = await this.mountSlots(ref.mount).acquire(this.mountShare(length), signal);
    try {
      yield* this.sourceChunks(ref, start, length, signal, fillClass, fill);
    } finally {
      releaseMount();
    }
  }
}

/**
 * The bytes of `chunks` past `have`, once their first `have.length` bytes are found equal to
 * `have`; CHECKSUM_MISMATCH if they differ. The chunks compared and not passed on go back to the
 * source's read memory here (the fill gives back those it copies).
 */
async function* sameStart(have: Buffer, chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let at = 0;
  for await (const chunk of chunks) {
    if (at >= have.length) {
      yield chunk;
      continue;
    }
    const n = Math.min(chunk.length, have.length - at);
    if (!chunk.subarray(0, n).equals(have.subarray(at, at + n))) {
      throw new FanoutError('CHECKSUM_MISMATCH', `the page owner sent bytes ${at}–${at + n} of the page that the source does not have, then failed: nothing of the page is kept`);
    }
    at += n;
    if (n < chunk.length) yield chunk.subarray(n);
    releaseSourceChunk(chunk);
  }
}

/** Whole pages of fills in flight that FILL_MEMORY holds (at least 2), also the fill buffers' pool size bound. */
export function fillSlots(pageSize: number): number {
  return Math.max(2, Math.floor(FILL_MEMORY / pageSize));
}

/**
 * Memory for the page buffers of fills in flight (what the source or a peer is writing into); in a
 * container, at most an eighth of its limit (lib/memory/container.ts), but always 2 pages.
 */
const FILL_MEMORY = containerShare(96 * 1024 * 1024);
/** Memory for the page buffers of relays in flight (pages this worker passes on from their owner); likewise. */
const RELAY_MEMORY = containerShare(64 * 1024 * 1024);
/** Small fills one whole page's share of fillsPerMount may carry (see mountFills). */
const SMALL_FILLS_PER_PAGE = 8;
