import { setMaxListeners } from 'node:events';
import { Readable } from 'node:stream';
import type { Clock } from '../../core/clock.js';
import { monotonicClock } from '../../core/clock.js';
import { FanoutError, abortError } from '../../core/errors.js';
import { pageSlice, pageSpan, pagesForRange } from '../../core/pages.js';
import { pageKey } from '../../lib/pagekey/index.js';
import type { FileInfo, Member, PageRef } from '../../core/types.js';
import type { PageFetcher, PageProgress } from './pagefetcher.js';
import type { PageReporter } from './report.js';
import type { ByteBudget } from '../transfer/index.js';
import { missedDeadline } from './timeouts.js';
import { DEFAULT_HEDGE, HedgePolicy, parseHedge, type HedgePolicyOptions, type HedgeSetting } from './hedge.js';
import { WorkerHealth } from './health.js';
import { DEFINITIVE, racePage, type RaceDeps } from './race.js';

/** Who may hold a page: ring owners first, then the rest of the ring as fallbacks. */
export interface Placement {
  owners(key: string, n: number): Member[];
  members(): Member[];
}

/** Reads a page straight from the source, bypassing the cluster (last-resort fallback). */
export type SourceFallback = (ref: PageRef, start: number, length: number, signal?: AbortSignal) => Promise<Buffer[]>;

export interface ClusterReaderOptions {
  placement: () => Placement;
  fetcher: PageFetcher;
  pageSize: number;
  /** Page fetches in flight per read (the readahead window). */
  concurrency?: number;
  /** Distinct workers tried for one page before giving up or falling back to the source. */
  maxWorkerAttempts?: number;
  /** The cluster's replication factor: reads of a page are spread over its first R owners. */
  replication?: number;
  /**
   * Ask the next candidate too when a page request has made no progress (no headers, no body
   * chunk) for a while: 'auto' (default) derives the delay from observed times to first byte,
   * a number fixes it in ms, 'off' disables hedging.
   */
  hedge?: HedgeSetting;
  /** Old name of a fixed `hedge` delay (0 = off). */
  hedgeDelayMs?: number;
  /** Tuning of the 'auto' hedge (floor, ceiling, budget): defaults suit every deployment seen. */
  hedgePolicy?: HedgePolicyOptions;
  sourceFallback?: SourceFallback;
  /** How long a worker that failed is tried last. */
  downForMs?: number;
  /** What is known of each worker's failures and slowness, shared with other readers of the process (a session's). Default: this reader's own. */
  health?: WorkerHealth;
  clock?: Clock;
  onWorkerFailure?: (member: Member, err: FanoutError) => void;
  /**
   * Told of a page that failed its checksum, before the next worker is asked: the worker that
   * sent it re-verifies its copy and drops it if corrupt (so a retry that reaches it through
   * another worker gets a refetched page, not the same bad bytes).
   */
  reporter?: PageReporter;
  /** Every page request is a preload (`fanout load`, sync prefetch): a line serves it after waiting reads. */
  preload?: boolean;
  /**
   * Bytes of pages fetched ahead of what the reads' consumers asked for, shared by every reader
   * that is given it (the SDK's, process-wide: client/readahead.ts). Each page past the one a read
   * waits for takes room (never waited for: a read short of room fetches less ahead) until it is
   * handed on or the read ends; the page a read waits for needs none of it (it has `demand`), so
   * no read can wait on another's consumer. Without it each read fetches its whole window ahead.
   */
  ahead?: ByteBudget;
  /**
   * Bytes of the pages reads wait for (the next page of each read, when none was fetched ahead),
   * held only while the page is fetched: given back when its fetch ends, before it is handed on.
   * A read waits for it (FIFO, holding nothing), so N reads at once fetch at most this many bytes
   * of such pages, not N pages. No wait can be on a consumer: the room is held by fetches in
   * flight, which end by themselves (their answer, a failure, or their deadlines), never by pages
   * a program has not read yet; those hold `ahead` room, which no read waits for.
   */
  demand?: ByteBudget;
}

/** The worker failed: try another and keep this one last for a while. */
const WORKER_FAULT = new Set<string>(['WORKER_UNAVAILABLE', 'CHECKSUM_MISMATCH']);

/**
 * The read path shared by the SDK and the workers' range endpoint: splits a byte range into
 * pages, fetches a bounded window of them in parallel from their owners, falls back to other
 * workers (then, if configured, to the source) when one fails, and yields bytes in order.
 * Memory is bounded by window × page size; a whole file is never buffered.
 */
export class ClusterReader {
  private readonly concurrency: number;
  private readonly clock: Clock;
  /** Where this reader starts among a page's replicas: different readers spread over them. */
  private readonly spread = Math.floor(Math.random() * 1024);
  readonly health: WorkerHealth;
  readonly hedge: HedgePolicy;
  private readonly raceDeps: RaceDeps;

  constructor(private readonly options: ClusterReaderOptions) {
    this.concurrency = Math.max(1, options.concurrency ?? 8);
    this.clock = options.clock ?? monotonicClock;
    this.health = options.health ?? new WorkerHealth(this.clock, { downForMs: options.downForMs });
    const setting = options.hedge ?? (options.hedgeDelayMs !== undefined ? parseHedge(options.hedgeDelayMs) : DEFAULT_HEDGE);
    this.hedge = new HedgePolicy(setting, this.clock, options.hedgePolicy);
    this.raceDeps = { fetcher: options.fetcher, hedge: this.hedge, health: this.health, clock: this.clock, reporter: options.reporter, preload: options.preload, pageSize: options.pageSize, onFailure: (member, err) => this.onFailure(member, err) };
  }

  /** Streams bytes [start, end) of `file` (end exclusive) at exactly file.version. */
  read(mount: string, file: FileInfo, start = 0, end = file.size, signal?: AbortSignal): Readable {
    checkRange(file, start, end);
    return pageStream((inner) => this.pages(mount, file, start, end, inner), signal);
  }

  /** The same bytes as read(), as an async generator (for callers that write to a socket themselves). */
  async *chunks(mount: string, file: FileInfo, start: number, end: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    for await (const page of this.pages(mount, file, start, end, signal)) yield* page;
  }

  /**
   * The same bytes as read(), one array of chunks per page, in order: for sinks that write a
   * page at a time (one writev instead of one stream write per chunk). Fetches still in flight
   * are aborted when the caller stops early.
   */
  async *pages(mount: string, file: FileInfo, start: number, end: number, signal?: AbortSignal): AsyncGenerator<Buffer[]> {
    const { pageSize } = this.options;
    checkRange(file, start, end);
    const { first, last } = pagesForRange(start, end, pageSize);
    const controller = new AbortController();
    setMaxListeners(0, controller.signal); // one listener per page fetch in flight
    const onAbort = () => controller.abort(abortError(signal));
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    // Each page fetched ahead holds its room in `ahead` until it is handed on (released then).
    const window: { page: Promise<Buffer[]>; release: (() => void) | undefined }[] = [];
    let next = first;
    // `room`: the page the consumer waits for, with none fetched ahead, waits for room in
    // `demand`, which its fetch gives back when it ends (once per read, and per page only when
    // the process has no read-ahead room left).
    const launch = (release?: () => void, room?: ByteBudget) => {
      const ref: PageRef = { mount, path: file.path, version: file.version, size: file.size, index: next++ };
      const page = room ? this.fetchWithin(room, ref, controller.signal) : this.fetchPage(ref, controller.signal);
      page.catch(() => {}); // observed when its turn comes; avoid unhandled rejections meanwhile
      window.push({ page, release });
    };
    const launchAwaited = () => launch(undefined, this.options.demand);
    // Pages past the one awaited, while the window and the shared room allow.
    const launchAhead = () => {
      const { ahead } = this.options;
      while (next <= last && window.length < this.concurrency) {
        if (!ahead) launch();
        else {
          const span = pageSpan(next, file.size, pageSize);
          const release = ahead.tryAcquire(span.end - span.start);
          if (!release) return;
          launch(release);
        }
      }
    };
    try {
      // The first page is the one the consumer asks for now: no read-ahead room, only `demand`'s.
      if (next <= last) launchAwaited();
      launchAhead();
      for (let index = first; index <= last; index++) {
        if (window.length === 0) launchAwaited(); // none fetched ahead (no room): the consumer waits for this one
        const entry = window[0]!;
        const page = await entry.page;
        window.shift();
        entry.release?.();
        launchAhead();
        const { from, to } = pageSlice(index, start, end, pageSize);
        // A whole page (every page of a whole-file read but the ends) is handed on as it is.
        yield from === 0 && to === pageLength(page) ? page : [...sliceChunks(page, from, to)];
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      for (const entry of window) entry.release?.();
      if (window.length > 0) controller.abort(new FanoutError('ABORTED', 'reader closed'));
    }
  }

  /** fetchPage once `room` has the page's bytes, given back when the fetch ends (before the page is handed on). */
  private async fetchWithin(room: ByteBudget, ref: PageRef, signal: AbortSignal): Promise<Buffer[]> {
    const span = pageSpan(ref.index, ref.size, this.options.pageSize);
    const done = await room.acquire(span.end - span.start, signal);
    try {
      return await this.fetchPage(ref, signal);
    } finally {
      done();
    }
  }

  /** One page, from the first healthy candidate that answers correctly. */
  async fetchPage(ref: PageRef, signal?: AbortSignal): Promise<Buffer[]> {
    const { pageSize } = this.options;
    const { start, end } = pageSpan(ref.index, ref.size, pageSize);
    const key = pageKey(ref, pageSize);
    const candidates = this.candidates(key, ref.index);
    try {
      if (candidates.length === 0) throw new FanoutError('NO_WORKERS', 'no workers are known for this cluster');
      return await racePage(this.raceDeps, candidates, ref, end - start, signal, () => this.spares(key));
    } catch (err) {
      const error = err instanceof FanoutError ? err : new FanoutError('INTERNAL', String(err));
      if (DEFINITIVE.has(error.code) || !this.options.sourceFallback) throw error;
      return this.options.sourceFallback(ref, start, end - start, signal);
    }
  }

  /**
   * Who to ask, in order: one of the page's R replicas (rotated per reader and page, so that a
   * hot page is served by all its replicas, not one), the other replicas, then the next ring
   * members; slow workers go behind the others and failed ones last. The ring's next owners
   * come in ring order so that every reader's hedges for a page meet on the same worker, whose
   * single flight reads the source once for all of them.
   */
  private candidates(key: string, index: number): Member[] {
    const placement = this.options.placement();
    const attempts = Math.min(this.options.maxWorkerAttempts ?? 3, placement.members().length);
    const replication = Math.max(1, this.options.replication ?? 1);
    const owners = placement.owners(key, Math.max(attempts, replication));
    const replicas = owners.slice(0, replication);
    const turn = replicas.length === 0 ? 0 : (this.spread + index) % replicas.length;
    const ordered = [...replicas.slice(turn), ...replicas.slice(0, turn), ...owners.slice(replication)];
    return this.health.order(ordered).slice(0, Math.max(attempts, 1));
  }

  /** The rest of the ring for a page, asked one by one after refusals of its page size (race.ts). */
  private spares(key: string): Member[] {
    const placement = this.options.placement();
    return this.health.order(placement.owners(key, placement.members().length));
  }

  private onFailure(member: Member, err: FanoutError): void {
    // Both transports' deadline codes count (the lean one's FANOUT_*_TIMEOUT were taken for refusals).
    if (WORKER_FAULT.has(err.code)) this.health.failed(member.id, missedDeadline(err));
    else if (err.code === 'OVERLOADED') this.health.slow(member.id);
    this.options.onWorkerFailure?.(member, err);
  }
}

function pageLength(chunks: Buffer[]): number {
  let length = 0;
  for (const chunk of chunks) length += chunk.length;
  return length;
}

/** The parts of a page's chunks that fall in [from, to) of the page. */
export function* sliceChunks(chunks: Buffer[], from: number, to: number): Generator<Buffer> {
  let offset = 0;
  for (const chunk of chunks) {
    const chunkEnd = offset + chunk.length;
    if (chunkEnd > from && offset < to) {
      const a = Math.max(from, offset) - offset;
      const b = Math.min(to, chunkEnd) - offset;
      yield a === 0 && b === chunk.length ? chunk : chunk.subarray(a, b);
    }
    offset = chunkEnd;
    if (offset >= to) return;
  }
}

export function checkRange(file: FileInfo, start: number, end: number): void {
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && end <= file.size && start <= end)) {
    throw new FanoutError('RANGE_NOT_SATISFIABLE', `range ${start}-${end} is outside a file of ${file.size} bytes`);
  }
}

/**
 * A byte stream of `pages` (called once, with the stream's own signal): the caller's `signal`
 * aborts it, and a stream closed early (destroyed, or read no further) aborts the fetches still
 * in flight. Shared by ClusterReader.read and the SDK's reads that follow a page size change.
 */
export function pageStream(pages: (signal: AbortSignal) => AsyncIterable<Buffer[]>, signal?: AbortSignal): Readable {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal); // one listener per page fetch in flight
  const stream = Readable.from(chunksOf(pages(controller.signal)), { objectMode: false, highWaterMark: 0 });
  // An abort while the stream is open destroys it with the reason, as Node's own streams given a
  // signal are: a consumer that paused it (or has not read it yet) hears of it at once, not at
  // its next read (before, a paused stream of a closed FanoutClient stayed open until read
  // again). A signal aborted before the stream exists only fails its first read: destroyed here,
  // its error could come before the caller, still awaiting it, has a listener on it.
  const onAbort = () => {
    const reason = abortError(signal);
    controller.abort(reason);
    stream.destroy(reason);
  };
  if (signal?.aborted) controller.abort(abortError(signal));
  else signal?.addEventListener('abort', onAbort, { once: true });
  stream.once('close', () => {
    signal?.removeEventListener('abort', onAbort);
    controller.abort(new FanoutError('ABORTED', 'reader closed'));
  });
  return stream;
}

async function* chunksOf(pages: AsyncIterable<Buffer[]>): AsyncGenerator<Buffer> {
  for await (const page of pages) yield* page;
}
