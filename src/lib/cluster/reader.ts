import { setMaxListeners } from 'node:events';
import { Readable } from 'node:stream';
import type { Clock } from '../../core/clock.js';
import { systemClock } from '../../core/clock.js';
import { FanoutError, abortError } from '../../core/errors.js';
import { pageKey, pageSpan, pagesForRange } from '../../core/pages.js';
import type { FileInfo, Member, PageRef } from '../../core/types.js';
import type { PageFetcher } from './pagefetcher.js';

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
   * Ask the next candidate too when a page has not arrived after this long (0 = off). Cuts the
   * tail behind a slow worker, at the price of possibly reading that page from the source twice.
   */
  hedgeDelayMs?: number;
  sourceFallback?: SourceFallback;
  /** How long a worker that failed is skipped. */
  downForMs?: number;
  clock?: Clock;
  onWorkerFailure?: (member: Member, err: FanoutError) => void;
}

/** Errors that another worker would answer the same way: retrying elsewhere is pointless. */
const DEFINITIVE = new Set(['NOT_FOUND', 'SOURCE_CHANGED', 'RANGE_NOT_SATISFIABLE', 'INVALID_PATH', 'UNKNOWN_MOUNT', 'ABORTED', 'INVALID_ARGUMENT']);

/**
 * The read path shared by the SDK and the workers' range endpoint: splits a byte range into
 * pages, fetches a bounded window of them in parallel from their owners, falls back to other
 * workers (then, if configured, to the source) when one fails, and yields bytes in order.
 * Memory is bounded by window × page size; a whole file is never buffered.
 */
export class ClusterReader {
  private readonly down = new Map<string, number>();
  private readonly concurrency: number;
  private readonly clock: Clock;
  /** Where this reader starts among a page's replicas: different readers spread over them. */
  private readonly spread = Math.floor(Math.random() * 1024);

  constructor(private readonly options: ClusterReaderOptions) {
    this.concurrency = Math.max(1, options.concurrency ?? 8);
    this.clock = options.clock ?? systemClock;
  }

  /** Streams bytes [start, end) of `file` (end exclusive) at exactly file.version. */
  read(mount: string, file: FileInfo, start = 0, end = file.size, signal?: AbortSignal): Readable {
    checkRange(file, start, end);
    const controller = new AbortController();
    setMaxListeners(0, controller.signal); // one listener per page fetch in flight
    const onAbort = () => controller.abort(abortError(signal));
    signal?.addEventListener('abort', onAbort, { once: true });
    const stream = Readable.from(this.chunks(mount, file, start, end, controller.signal), { objectMode: false, highWaterMark: 0 });
    stream.once('close', () => {
      signal?.removeEventListener('abort', onAbort);
      controller.abort(new FanoutError('ABORTED', 'reader closed'));
    });
    return stream;
  }

  /** The same bytes as read(), as an async generator (for callers that write to a socket themselves). */
  async *chunks(mount: string, file: FileInfo, start: number, end: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const { pageSize } = this.options;
    checkRange(file, start, end);
    const { first, last } = pagesForRange(start, end, pageSize);
    const window: Promise<Buffer[]>[] = [];
    let next = first;
    const launch = () => {
      const ref: PageRef = { mount, path: file.path, version: file.version, size: file.size, index: next++ };
      const page = this.fetchPage(ref, signal);
      page.catch(() => {}); // observed when its turn comes; avoid unhandled rejections meanwhile
      window.push(page);
    };
    while (next <= last && window.length < this.concurrency) launch();
    for (let index = first; index <= last; index++) {
      const page = await window.shift()!;
      if (next <= last) launch();
      yield* sliceChunks(page, Math.max(start, index * pageSize) - index * pageSize, end - index * pageSize);
    }
  }

  /** One page, from the first healthy candidate that answers correctly. */
  async fetchPage(ref: PageRef, signal?: AbortSignal): Promise<Buffer[]> {
    const { pageSize } = this.options;
    const { start, end } = pageSpan(ref.index, ref.size, pageSize);
    const candidates = this.candidates(pageKey(ref, pageSize), ref.index);
    try {
      if (candidates.length === 0) throw new FanoutError('NO_WORKERS', 'no workers are known for this cluster');
      return await this.race(candidates, ref, end - start, signal);
    } catch (err) {
      const error = err instanceof FanoutError ? err : new FanoutError('INTERNAL', String(err));
      if (DEFINITIVE.has(error.code) || !this.options.sourceFallback) throw error;
      return this.options.sourceFallback(ref, start, end - start, signal);
    }
  }

  /**
   * Who to ask, in order: one of the page's R replicas (rotated per reader and page, so that a
   * hot page is served by all its replicas, not one), the other replicas, then the next ring
   * members; workers that failed recently go last.
   */
  private candidates(key: string, index: number): Member[] {
    const placement = this.options.placement();
    const attempts = Math.min(this.options.maxWorkerAttempts ?? 3, placement.members().length);
    const replication = Math.max(1, this.options.replication ?? 1);
    const owners = placement.owners(key, Math.max(attempts, replication));
    const replicas = owners.slice(0, replication);
    const turn = (this.spread + index) % replicas.length;
    const ordered = [...replicas.slice(turn), ...replicas.slice(0, turn), ...owners.slice(replication)];
    return this.orderByHealth(ordered).slice(0, Math.max(attempts, 1));
  }

  /**
   * Asks candidates one after another until one answers; with a hedge delay, a candidate that
   * has not answered in time gets company from the next one, and the first good answer wins.
   * Only the first request may be forwarded to the page's owner; later ones ask the worker to
   * read the source itself, since the owner is the likely culprit.
   */
  private race(candidates: Member[], ref: PageRef, length: number, signal?: AbortSignal): Promise<Buffer[]> {
    const hedgeDelayMs = this.options.hedgeDelayMs ?? 0;
    return new Promise((resolve, reject) => {
      const inflight = new Set<AbortController>();
      let next = 0;
      let settled = false;
      let lastError: FanoutError | undefined;
      let hedgeTimer: NodeJS.Timeout | undefined;
      const finish = (fn: () => void) => {
        settled = true;
        clearTimeout(hedgeTimer);
        signal?.removeEventListener('abort', onAbort);
        for (const controller of inflight) controller.abort(new FanoutError('ABORTED', 'another request won'));
        fn();
      };
      const onAbort = () => finish(() => reject(abortError(signal)));
      const launch = (): boolean => {
        if (settled || next >= candidates.length) return false;
        const member = candidates[next]!;
        const direct = next > 0;
        next++;
        const controller = new AbortController();
        inflight.add(controller);
        this.options.fetcher.fetch(member, ref, length, { signal: controller.signal, direct }).then(
          (page) => {
            if (!settled) finish(() => resolve(page));
          },
          (err: unknown) => {
            inflight.delete(controller);
            if (settled) return;
            const error = err instanceof FanoutError ? err : new FanoutError('INTERNAL', String(err));
            if (DEFINITIVE.has(error.code)) return finish(() => reject(error));
            lastError = error;
            this.markDown(member, error);
            if (!launch() && inflight.size === 0) finish(() => reject(lastError));
          },
        );
        if (hedgeDelayMs > 0 && next < candidates.length) {
          clearTimeout(hedgeTimer);
          hedgeTimer = setTimeout(launch, hedgeDelayMs);
        }
        return true;
      };
      if (signal?.aborted) return reject(abortError(signal));
      signal?.addEventListener('abort', onAbort, { once: true });
      launch();
    });
  }

  private orderByHealth(candidates: Member[]): Member[] {
    const now = this.clock.now();
    const healthy = candidates.filter((m) => (this.down.get(m.id) ?? 0) <= now);
    const unhealthy = candidates.filter((m) => (this.down.get(m.id) ?? 0) > now);
    return [...healthy, ...unhealthy];
  }

  private markDown(member: Member, err: FanoutError): void {
    if (err.code === 'WORKER_UNAVAILABLE' || err.code === 'CHECKSUM_MISMATCH') {
      this.down.set(member.id, this.clock.now() + (this.options.downForMs ?? 5000));
    }
    this.options.onWorkerFailure?.(member, err);
  }
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

function checkRange(file: FileInfo, start: number, end: number): void {
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && end <= file.size && start <= end)) {
    throw new FanoutError('RANGE_NOT_SATISFIABLE', `range ${start}-${end} is outside a file of ${file.size} bytes`);
  }
}
