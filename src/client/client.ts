import { setMaxListeners } from 'node:events';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { FanoutError, abortError } from '../core/errors.js';
import { pageSpan } from '../core/pages.js';
import { pageKey } from '../lib/pagekey/index.js';
import { encodeUrlPath, parseFanoutPath } from '../core/paths.js';
import type { DirEntry, FileInfo, IgnoredRecord, PageRef, WorkerStatus } from '../core/types.js';
import { ClusterReader, DEFAULT_PEER_TIMEOUTS, checkRange, HttpPageReporter, PageCache, PageFetcher, pageStream, parseHedge, type HedgeSetting, type PeerTimeouts, type SourceFallback } from '../lib/cluster/index.js';
import type { CaOption, ClientTrust } from '../lib/tls/client.js';
import { ROUTES } from '../lib/wire/protocol.js';
import { checkFileInfo, checkListing } from '../lib/wire/fileanswers.js';
import type { S3SourceOptions, Ufs } from '../lib/ufs/index.js';
import { checkEndpoint } from './answers.js';
import type { ClusterInfo, ClusterSession } from './session.js';
import type { BatchPageReader } from './batchreader.js';
import { sharedSession } from './sessions.js';
import { FollowedPageSize, followingPages } from './pagesize.js';
import { readAhead, readDemand } from './readahead.js';

export type { ClusterInfo } from './session.js';

/** Pages of files counted in one page size (FanoutClient.pageReader). */
export interface SizedPageReader {
  readonly pageSize: number;
  /** `hash`: the page's SHA-256 from a release manifest: asked for, placed and verified by content. */
  fetchPage(file: StatResult, index: number, signal?: AbortSignal, hash?: string): Promise<Buffer[]>;
  /** The same page carried with other small pages in one request (POST /v1/pages). */
  fetchBatchedPage(file: StatResult, index: number, signal?: AbortSignal): Promise<Buffer[]>;
  releasePage(page: Buffer[]): void;
}
export { checkEndpoint } from './answers.js';


export interface FanoutClientOptions {
  /** Any worker of the cluster; more than one lets discovery survive a dead worker. Default: FANOUT_ENDPOINT or http://127.0.0.1:7450 */
  endpoint?: string | string[];
  /**
   * Sent as `Authorization: Bearer TOKEN`: a read token where the cluster requires one for
   * reads, an admin token for load/pin/free/ttl. Default: FANOUT_TOKEN, else the token a
   * `fanout serve` of this user published for the address asked (see lib/auth/localtoken).
   */
  token?: string;
  /** Pages fetched in parallel per read (readahead window). Default: 2 per worker, at least 6, at most 8 (see defaultWindow). */
  concurrency?: number;
  /**
   * Ask the next worker too for a page whose request made no progress for a while: 'auto'
   * (default: 3 × the recent p95 time to first byte, at least 100 ms, at most 5 s), a fixed
   * delay in ms, or 'off'. A worker that had to be hedged is asked after the others for a while.
   */
  hedge?: HedgeSetting;
  /** Old name of a fixed `hedge` delay in ms (0 = off). */
  hedgeDelayMs?: number;
  /**
   * Deadlines for requests to workers (pages, stat, list, cluster): connecting, the response
   * headers, and silence between body chunks. A timeout fails the request with
   * WORKER_UNAVAILABLE naming the worker and the deadline. Defaults: 5 s, 30 s, 30 s.
   */
  timeouts?: { connectMs?: number; firstByteMs?: number; idleMs?: number };
  /**
   * Bytes of recently read pages kept in memory for readPage(), shared by all its callers, so
   * that concurrent readers of one file fetch each page once. Default 16 MiB.
   */
  pageCacheBytes?: number;
  /** How often the member list is refreshed from the cluster. Default 10 s. */
  membershipRefreshMs?: number;
  /**
   * When every candidate worker fails for a page, read it straight from the source instead of
   * failing. Give the same mount URIs the workers use.
   */
  sourceFallback?: { mounts: Record<string, string>; s3?: S3SourceOptions };
  /**
   * CA bundle trusted for https:// workers: a PEM file path, PEM text or bytes. Default:
   * FANOUT_CA, else the system's trust store. Certificates are always verified.
   */
  ca?: CaOption;
  /** Extra headers on every request to workers (a cluster reading another sends its id: lib/ufs/fanout.ts). */
  headers?: Record<string, string>;
}

export interface StatResult extends FileInfo {
  mount: string;
}

export interface ReadOptions {
  /** First byte (inclusive). */
  start?: number;
  /** Last byte + 1 (exclusive). Defaults to the file size. */
  end?: number;
  signal?: AbortSignal;
}

export interface ClusterStatus {
  members: (Partial<WorkerStatus> & { id: string; url: string; reachable: boolean; error?: string })[];
  totals: { capacity: number; used: number; hits: number; misses: number; bytesFromSource: number; bytesServed: number; hitRatio: number };
  stale: boolean;
  /**
   * Workers this client was pointed at that answer but are in no ring (starting, or their id held
   * by another worker): no member list shows them, so they are asked as endpoints.
   */
  outOfRing: (WorkerStatus & { url: string })[];
  /** Member records the members leave out of the ring (no lease), once per key. */
  ignoredRecords: IgnoredRecord[];
}

export const DEFAULT_ENDPOINT = 'http://127.0.0.1:7450';

/** How long a member's /v1/status may take before it is reported unreachable (see status()). */
export const STATUS_DEADLINE_MS = 5_000;

/** Membership states in which a worker is in its ring (the others: starting, id-taken). */
const IN_RING: ReadonlySet<string> = new Set(['static', 'registered', 'registering']);

/**
 * The fanout SDK. Learns the members from any worker, computes page owners with the same ring
 * as the workers, and reads files as streams of verified pages fetched in parallel. Clients of
 * one process with the same endpoints and credentials share one cluster session (members,
 * ring, connection pools, worker health: see session.ts); what stays per client is its read
 * settings (window, hedge, source fallback) and its page cache.
 */
export class FanoutClient {
  /** Members, ring, pools and health, shared with the process's other clients of this cluster. */
  readonly session: ClusterSession;
  /** Tells a worker when a page it sent failed its checksum (it re-verifies and drops its copy). */
  readonly pageReporter: HttpPageReporter;
  /** TLS settings of every connection to a worker, for other readers built on this client (releases). */
  readonly connectOptions: ClientTrust | undefined;
  /** Readers by the page size they count in (their hedge and window state), shared by both kinds of read below. */
  private readonly readers = new Map<number, ClusterReader>();
  /**
   * Page fetches by index (readPage, fetchPage, fetchBatchedPage) count in the page size learnt
   * first, for the client's life. An index means nothing without its page size, so these are never
   * re-planned in another: after a change of the cluster's they are refused (PAGE_SIZE_MISMATCH).
   * Long-lived callers that learn the size themselves use pageReader(size).
   */
  private indexPageSize = 0;
  /** The page size byte reads (createReadStream, readFile, readPages) count in: followed. */
  private byteReadSize: FollowedPageSize | undefined;
  private batches: BatchPageReader | undefined;
  private readonly sources = new Map<string, Ufs>();
  private readonly pages: PageCache;
  private closing: Promise<void> | undefined;
  /** Aborted by close(): the signal of this client's page fetches that come with none of their own. */
  private readonly closed = new AbortController();
  /** Page fetches in flight under a caller's signal (close() aborts them; each is removed as it settles). */
  private readonly fetches = new Set<AbortController>();
  /**
   * This client's reads (streams) in flight, which close() aborts: held weakly (a signal, its
   * controller by the signal), so a stream a program drops without reading it to its end or
   * destroying it is collected as before instead of kept until close(). Per read, not per page:
   * a WeakRef costs ≈ 20 µs (measured), a page fetch's plain controller ≈ 1.5 µs.
   */
  private readonly inFlight = new Set<WeakRef<AbortSignal>>();
  private readonly controllers = new WeakMap<AbortSignal, AbortController>();
  /** inFlight's size at which references to collected reads are dropped from it. */
  private pruneAt = 64;
  private readonly endpoints: string[];

  constructor(private readonly options: FanoutClientOptions = {}) {
    setMaxListeners(0, this.closed.signal); // one listener per page fetch in flight without a signal of its own
    const endpoint = options.endpoint ?? process.env.FANOUT_ENDPOINT ?? DEFAULT_ENDPOINT;
    const endpoints = (Array.isArray(endpoint) ? endpoint : [endpoint]).map(checkEndpoint);
    this.endpoints = endpoints;
    this.pages = new PageCache(options.pageCacheBytes ?? 16 * 1024 * 1024);
    const timeouts: PeerTimeouts = { ...DEFAULT_PEER_TIMEOUTS };
    for (const [key, value] of Object.entries(options.timeouts ?? {})) {
      if (value !== undefined) {
        if (!Number.isInteger(value) || value <= 0) throw new FanoutError('INVALID_ARGUMENT', `timeouts.${key} must be a positive integer (ms)`);
        timeouts[key as keyof PeerTimeouts] = value;
      }
    }
    this.session = sharedSession({ endpoints, token: options.token, ca: options.ca, timeouts, membershipRefreshMs: options.membershipRefreshMs, headers: options.headers });
    this.connectOptions = this.session.connectOptions;
    this.pageReporter = this.session.reporter;
  }

  /** Dispatcher of admin requests to workers: the CA of `ca` and the deadlines of `timeouts`. */
  get dispatcher(): Dispatcher {
    return this.session.dispatcher;
  }

  /** Cluster facts (members, page size), refreshed at most every membershipRefreshMs. */
  async cluster(force = false): Promise<ClusterInfo> {
    this.checkOpen();
    return this.session.cluster(force);
  }

  async stat(path: string): Promise<StatResult> {
    this.checkOpen();
    const target = parseFanoutPath(path);
    const route = `/v1/stat/${encodeUrlPath(target.mount)}/${encodeUrlPath(target.path)}`;
    const info = checkFileInfo(await this.session.getJson(route), route);
    return { ...info, mount: target.mount };
  }

  async list(path: string): Promise<DirEntry[]> {
    this.checkOpen();
    const target = parseFanoutPath(path);
    const suffix = target.mount ? `/${encodeUrlPath(target.mount)}/${encodeUrlPath(target.path)}` : '/';
    return checkListing(await this.session.getJson(`/v1/list${suffix}`), `/v1/list${suffix}`);
  }

  /**
   * Streams a file, or bytes [start, end) of it, at the version current when the read starts:
   * a source change during the read fails it (SOURCE_CHANGED) rather than mixing versions. A
   * change of the cluster's pageSize (its workers restarted with another) is followed: the read
   * goes on from its byte in the new pages (pagesize.ts).
   */
  async createReadStream(path: string, options: ReadOptions = {}): Promise<Readable & { file: StatResult }> {
    const file = await this.stat(path);
    return this.readFile(file, options);
  }

  /** Like createReadStream for a file already stat'ed (its version is what gets read). */
  async readFile(file: StatResult, options: ReadOptions = {}): Promise<Readable & { file: StatResult }> {
    const start = options.start ?? 0;
    const end = options.end ?? file.size;
    checkRange(file, start, end);
    const size = await this.followedPageSize();
    const read = this.track(options.signal);
    const stream = pageStream((signal) => followingPages(size, this.readerOf, file.mount, file, start, end, signal), read.signal);
    stream.once('close', read.done);
    return Object.assign(stream, { file });
  }

  /**
   * The bytes of readFile() as one array of chunks per page, in order, for sinks that write a
   * page at a time (`fanout cat`: one writev per page rather than a stream write per chunk).
   * Stopping early (return, break) aborts the fetches in flight.
   */
  async *readPages(file: StatResult, options: ReadOptions = {}): AsyncGenerator<Buffer[]> {
    const start = options.start ?? 0;
    const end = options.end ?? file.size;
    checkRange(file, start, end);
    const size = await this.followedPageSize();
    const read = this.track(options.signal);
    try {
      yield* followingPages(size, this.readerOf, file.mount, file, start, end, read.signal);
    } finally {
      read.done();
    }
  }

  /**
   * Page `index` of a file already stat'ed (at its version), as verified chunks. Served from the
   * client's shared page cache when recent, and fetched once however many callers ask for it
   * at the same time. For readers that do their own readahead (the FUSE mount).
   */
  async readPage(file: StatResult, index: number): Promise<Buffer[]> {
    const reader = await this.clusterReader();
    // The reader's size, not the session's of the moment: a refreshed answer may give another.
    const pageSize = this.indexPageSize;
    const ref = { mount: file.mount, path: file.path, version: file.version, size: file.size, index };
    const { start, end } = pageSpan(index, file.size, pageSize);
    return this.pages.get(pageKey(ref, pageSize), end - start, () => this.tracked(undefined, (signal) => reader.fetchPage(ref, signal)));
  }

  /**
   * Gives back the chunks of a page from readPages() or fetchPage() once they are written out
   * (in the write's callback): the memory they were received in is read into again, which is
   * what makes receiving cost no more than a raw socket (lib/leanhttp/slabs.ts). Optional: a
   * page never given back is garbage-collected. Never for readPage()'s pages (the page cache
   * shares them).
   */
  releasePage(page: Buffer[]): void {
    for (const chunk of page) this.session.fetcher.release(chunk);
  }

  /**
   * Page `index` of a file already stat'ed, verified, fetched now (no shared cache): for
   * writers that place pages themselves (`fanout cp` writes each at its offset as it arrives).
   * `hash`: the page's SHA-256 from a release manifest: asked for, placed and verified by content.
   */
  async fetchPage(file: StatResult, index: number, signal?: AbortSignal, hash?: string): Promise<Buffer[]> {
    const reader = await this.clusterReader();
    return this.tracked(signal, (tracked) => reader.fetchPage({ mount: file.mount, path: file.path, version: file.version, size: file.size, index, ...(hash ? { hash } : {}) }, tracked));
  }

  /**
   * The same page as fetchPage(), carried with other small pages in one request when it is small
   * (POST /v1/pages): for callers with many small files in flight (`fanout cp` of a tree).
   */
  async fetchBatchedPage(file: StatResult, index: number, signal?: AbortSignal): Promise<Buffer[]> {
    const reader = await this.clusterReader();
    const batches = (this.batches ??= this.session.batchReader(reader, { pageSize: this.indexPageSize }));
    return this.tracked(signal, (tracked) => batches.fetchPage({ mount: file.mount, path: file.path, version: file.version, size: file.size, index }, tracked));
  }

  /**
   * Pages counted in `pageSize`, whatever the cluster's page size is or becomes: for a reader that
   * counts pages itself and must never get page `index` of another size (the FUSE mount keeps one
   * per page size it has followed: mount/geometry.ts). Every request says its page size, so once
   * the cluster's is another, workers refuse them (PAGE_SIZE_MISMATCH) rather than answer another
   * span of the file. The reader is built at the first fetch (it needs the cluster's members).
   */
  pageReader(pageSize: number): SizedPageReader {
    let built: Promise<{ reader: ClusterReader; batches: BatchPageReader }> | undefined;
    const build = () =>
      (built ??= this.cluster().then(
        (info) => {
          const reader = this.newReader(info, pageSize);
          return { reader, batches: this.session.batchReader(reader, { pageSize }) };
        },
        (err: unknown) => {
          built = undefined; // asked again at the next fetch
          throw err;
        },
      ));
    const ref = (file: StatResult, index: number): PageRef => ({ mount: file.mount, path: file.path, version: file.version, size: file.size, index });
    return {
      pageSize,
      fetchPage: async (file, index, signal, hash) => {
        const { reader } = await build();
        return this.tracked(signal, (tracked) => reader.fetchPage({ ...ref(file, index), ...(hash ? { hash } : {}) }, tracked));
      },
      fetchBatchedPage: async (file, index, signal) => {
        const { batches } = await build();
        return this.tracked(signal, (tracked) => batches.fetchPage(ref(file, index), tracked));
      },
      releasePage: (page) => this.releasePage(page),
    };
  }

  /** Hits, joins and fetches of readPage()'s shared page cache. */
  pageCacheStats(): ReturnType<PageCache['stats']> {
    return this.pages.stats();
  }

  /**
   * Every member's counters, plus cluster totals. Unreachable members are reported, not fatal;
   * so is a member that gives no answer within STATUS_DEADLINE_MS (a status is computed from
   * counters at hand): a stopped member made `fanout status` and every `df` of a mount wait the
   * 30 s first-byte deadline (found by a fault hunt). Measured with 3 workers, one SIGSTOPped: a
   * `df` of a mount whose status cache expired 5.05 s, then 58 ms while the member stays
   * marked down; `fanout status` 5.5 s.
   */
  async status(): Promise<ClusterStatus> {
    this.checkOpen();
    const info = await this.cluster(true);
    // zod is loaded by the commands that need it, not by every `fanout cat`.
    const { parseAnswer, workerStatusSchema } = await import('../lib/wire/schemas.js');
    // Asked meanwhile, not after: an endpoint that gives no answer costs its deadline once.
    const outOfRing = this.endpointsOutOfRing(info);
    const members = await Promise.all(
      info.members.map(async (member) => {
        // A member this process saw fail moments ago is not asked again until its down time ends:
        // a mount's every `df` would wait STATUS_DEADLINE_MS on it.
        if (this.session.health.isDown(member.id)) return { id: member.id, url: member.url, capacity: member.capacity, reachable: false, error: 'not asked: it failed a request in the last seconds' };
        try {
          const status: WorkerStatus = parseAnswer(workerStatusSchema, await this.session.getJsonFrom(member.url, ROUTES.status, STATUS_DEADLINE_MS), `${member.url}${ROUTES.status}`);
          return { ...status, id: member.id, url: member.url, reachable: true };
        } catch (err) {
          return { id: member.id, url: member.url, capacity: member.capacity, reachable: false, error: (err as Error).message };
        }
      }),
    );
    const sum = (pick: (m: Partial<WorkerStatus>) => number | undefined) => members.reduce((total, m) => total + (pick(m) ?? 0), 0);
    const hits = sum((m) => m.hits);
    const misses = sum((m) => m.misses);
    const ignored = new Map(members.flatMap((m) => (m.reachable && 'membership' in m ? (m.membership?.ignored ?? []) : [])).map((r) => [r.key, r]));
    return {
      members,
      stale: info.stale,
      outOfRing: await outOfRing,
      ignoredRecords: [...ignored.values()],
      totals: {
        capacity: sum((m) => m.capacity),
        used: sum((m) => m.used),
        hits,
        misses,
        bytesFromSource: sum((m) => m.bytesFromSource),
        bytesServed: sum((m) => m.bytesServed),
        hitRatio: hits + misses === 0 ? 0 : hits / (hits + misses),
      },
    };
  }

  /**
   * The endpoints this client was given that are no member's URL and say they are in no ring.
   * Only those are asked: pointed at a member, this costs nothing. Nor is the endpoint whose
   * member list `info` is when that answer says it is in a ring (a load balancer's address, a
   * member's other name): before, each such endpoint was asked for its status once more, whose
   * answer was dropped. Best effort: an endpoint that does not answer is left out (status() must
   * not fail for it).
   */
  private async endpointsOutOfRing(info: ClusterInfo): Promise<ClusterStatus['outOfRing']> {
    const { parseAnswer, workerStatusSchema } = await import('../lib/wire/schemas.js');
    const known = new Set(info.members.map((m) => m.url));
    const from = this.session.infoFrom;
    if (from !== undefined && IN_RING.has(info.membership ?? '')) known.add(from);
    const answers = await Promise.all(
      this.endpoints
        .filter((url) => !known.has(url))
        .map(async (url) => {
          try {
            const status: WorkerStatus = parseAnswer(workerStatusSchema, await this.session.getJsonFrom(url, ROUTES.status, STATUS_DEADLINE_MS), `${url}${ROUTES.status}`);
            // The states in which a worker is in no ring (its readiness fails in them too).
            const state = status.membership?.state;
            return state === 'id-taken' || state === 'starting' ? [{ ...status, url }] : [];
          } catch {
            return [];
          }
        }),
    );
    return answers.flat();
  }

  /**
   * A page fetcher with its own connection pools that carries this client's credentials.
   * Readers inside the process need none: the session's (client.session.reader()) shares its
   * pools; this is for callers that want pools of their own.
   */
  newPageFetcher(options: { connectionsPerWorker?: number; preload?: boolean } = {}): PageFetcher {
    return this.session.newPageFetcher(options);
  }

  /** POSTs an admin call (JSON in, JSON out) to one worker, with the admin token; default deadlines: `timeouts`. */
  async adminPost(base: string, route: string, body: unknown, timeoutMs?: number): Promise<unknown> {
    this.checkOpen();
    return this.session.adminPost(base, route, body, timeoutMs);
  }

  /**
   * Releases this client's share of the session (the last client closes it) and its source
   * fallbacks. Its reads and page fetches in flight fail with ABORTED, and so does every call
   * after it. Before, they went on: a read in flight at close() finished on connections opened
   * again in the closed session, as did every read after it, and those kept the process alive
   * until their idle timeout (4 s) with no one left to close them (found by a fault hunt).
   */
  close(): Promise<void> {
    if (!this.closing) {
      const closed = new FanoutError('ABORTED', 'the FanoutClient was closed');
      for (const read of this.inFlight) {
        const signal = read.deref();
        if (signal) this.controllers.get(signal)?.abort(closed);
      }
      this.inFlight.clear();
      for (const fetch of this.fetches) fetch.abort(closed);
      this.fetches.clear();
      this.closed.abort(closed);
    }
    this.closing ??= (async () => {
      await this.session.release();
      await Promise.all([...this.sources.values()].map((s) => s.close?.()));
    })();
    return this.closing;
  }

  private checkOpen(): void {
    if (this.closing) throw new FanoutError('ABORTED', 'this FanoutClient is closed (close() was called): make a new one');
  }

  /**
   * A signal for one read (a stream, readPages) of this client: aborted by `signal` or by close().
   * `done` unlinks it once the read is over.
   */
  private track(signal: AbortSignal | undefined): { signal: AbortSignal; done: () => void } {
    this.checkOpen();
    const controller = new AbortController();
    const onAbort = () => controller.abort(abortError(signal));
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    if (this.inFlight.size >= this.pruneAt) {
      for (const read of this.inFlight) if (read.deref() === undefined) this.inFlight.delete(read);
      this.pruneAt = Math.max(64, 2 * this.inFlight.size);
    }
    const read = new WeakRef(controller.signal);
    this.controllers.set(controller.signal, controller);
    this.inFlight.add(read);
    return {
      signal: controller.signal,
      done: () => {
        signal?.removeEventListener('abort', onAbort);
        this.inFlight.delete(read);
      },
    };
  }

  /**
   * `fetch` under a signal that close() aborts too: the client's own when the caller gives none
   * (no allocation: this is per page), else one tied to the caller's, removed as the fetch settles.
   */
  private async tracked<T>(signal: AbortSignal | undefined, fetch: (signal: AbortSignal) => Promise<T>): Promise<T> {
    this.checkOpen();
    if (!signal) return fetch(this.closed.signal);
    const controller = new AbortController();
    const onAbort = () => controller.abort(abortError(signal));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    this.fetches.add(controller);
    try {
      return await fetch(controller.signal);
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.fetches.delete(controller);
    }
  }

  private async clusterReader(): Promise<ClusterReader> {
    const info = await this.cluster();
    if (this.indexPageSize === 0) this.indexPageSize = info.pageSize;
    return this.readerOf(this.indexPageSize);
  }

  /**
   * The page size byte reads count in: the cluster's, followed when it changes (its workers
   * restarted with another pageSize). Byte reads address bytes, so one refused for its page size
   * goes on from its byte offset in the new one (pagesize.ts); said once per change.
   */
  private async followedPageSize(): Promise<FollowedPageSize> {
    const info = await this.cluster();
    this.byteReadSize ??= new FollowedPageSize(info.pageSize, {
      clusterPageSize: async (fresh) => (await this.cluster(fresh)).pageSize,
      changed: (from, to) => {
        for (const size of this.readers.keys()) if (size !== to && size !== this.indexPageSize) this.readers.delete(size);
        process.emitWarning(`the cluster's pageSize changed from ${from} to ${to} bytes (its workers restarted with another pageSize): reads go on in pages of ${to} bytes`, { type: 'FanoutWarning', code: 'PAGE_SIZE_MISMATCH' });
      },
    });
    return this.byteReadSize;
  }

  private readonly readerOf = (pageSize: number): ClusterReader => {
    let reader = this.readers.get(pageSize);
    if (!reader) {
      reader = this.newReader(this.session.info!, pageSize); // learnt by cluster() before any read
      this.readers.set(pageSize, reader);
    }
    return reader;
  };

  private newReader(info: ClusterInfo, pageSize: number): ClusterReader {
    return this.session.reader({
      pageSize,
      concurrency: this.options.concurrency ?? defaultWindow(info.members.length),
      replication: info.replication,
      hedge: this.options.hedge ?? (this.options.hedgeDelayMs !== undefined ? parseHedge(this.options.hedgeDelayMs) : 'auto'),
      sourceFallback: this.options.sourceFallback ? this.readFromSource : undefined,
      ahead: readAhead,
      demand: readDemand,
    });
  }

  private readonly readFromSource: SourceFallback = async (ref, start, length, signal) => {
    const uri = this.options.sourceFallback?.mounts[ref.mount];
    if (!uri) throw new FanoutError('UNKNOWN_MOUNT', `no source fallback configured for mount "${ref.mount}"`);
    let ufs = this.sources.get(ref.mount);
    if (!ufs) {
      // Loaded on first use: the S3 SDK is heavy and most clients never fall back to the source.
      const { openUfs } = await import('../lib/ufs/index.js');
      ufs = openUfs(uri, this.options.sourceFallback?.s3);
      this.sources.set(ref.mount, ufs);
    }
    const page: Buffer[] = [];
    let received = 0;
    for await (const chunk of ufs.read(ref.path, ref.version, start, length, signal) as AsyncIterable<Buffer>) {
      page.push(chunk);
      received += chunk.length;
    }
    if (received !== length) throw new FanoutError('SOURCE_TRUNCATED', `source returned ${received} of ${length} bytes`);
    return page;
  };
}

/**
 * A read's window when the caller sets none: two pages in flight per worker, 6 to 8 in all.
 * Pages are verified whole before they are written, so each one in flight is memory the
 * kernel's copy and the checksum walk through: more than 8 only costs CPU (one worker, 2 GiB
 * warm to /dev/null, 8 alternations: 12 pages 1.17 client CPU s against 0.98 with 4). Fewer
 * leave the two sides waiting on each other between pages (the same runs: 2 pages 1.29 s wall,
 * 4 pages 1.18 s, 6 pages 1.17 s). Once read buffers came in huge pages (lib/memory: a bigger
 * window no longer faults in its memory page by page), 6 against 4 for one worker: `fanout cat`
 * of 2 GiB 1,213 against 1,317 ms (median of 12 alternations), in-process reads 3–8 % faster with
 * less CPU (docs/benchmarks.md). Several workers each need their own pages in flight to all send
 * at once, hence per worker.
 */
export function defaultWindow(workers: number): number {
  return Math.min(8, Math.max(6, 2 * workers));
}
