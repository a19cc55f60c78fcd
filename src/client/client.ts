import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { FanoutError, errorFromJSON } from '../core/errors.js';
import { pageKey, pageSpan } from '../core/pages.js';
import { encodeUrlPath, parseFanoutPath } from '../core/paths.js';
import type { DirEntry, FileInfo, Member, WorkerStatus } from '../core/types.js';
import { ClientCredentials } from '../lib/auth/index.js';
import { ClusterReader, DEFAULT_PEER_TIMEOUTS, HttpPageReporter, PageCache, PageFetcher, describeTimeout, parseHedge, type HedgeSetting, type PeerTimeouts, type SourceFallback } from '../lib/cluster/index.js';
import { HashRing } from '../lib/hashring/index.js';
import { undici } from '../lib/http/undici.js';
import { certificateHint, readCa, tlsConnectOptions, type CaOption } from '../lib/tls/index.js';
import { HEADERS, ROUTES, clusterInfoSchema, parseAnswer, workerStatusSchema } from '../lib/wire/index.js';
import type { S3SourceOptions, Ufs } from '../lib/ufs/index.js';
import { JsonGetter } from './jsonget.js';


export interface FanoutClientOptions {
  /** Any worker of the cluster; more than one lets discovery survive a dead worker. Default: FANOUT_ENDPOINT or http://127.0.0.1:7450 */
  endpoint?: string | string[];
  /**
   * Sent as `Authorization: Bearer TOKEN`: a read token where the cluster requires one for
   * reads, an admin token for load/pin/free/ttl. Default: FANOUT_TOKEN, else the token a
   * `fanout serve` of this user published for the address asked (see lib/auth/localtoken).
   */
  token?: string;
  /** Pages fetched in parallel per read (readahead window). Default 8. */
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
}

export interface ClusterInfo {
  self: string;
  pageSize: number;
  replication: number;
  statTtlMs: number;
  members: Member[];
  stale: boolean;
  mounts: string[];
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
}

export const DEFAULT_ENDPOINT = 'http://127.0.0.1:7450';

/**
 * The fanout SDK. Learns the members from any worker, computes page owners with the same ring
 * as the workers, and reads files as streams of verified pages fetched in parallel.
 */
export class FanoutClient {
  private readonly endpoints: string[];
  private readonly credentials: ClientCredentials;
  private readonly fetcher: PageFetcher;
  /** Tells a worker when a page it sent failed its checksum (it re-verifies and drops its copy). */
  readonly pageReporter: HttpPageReporter;
  /** TLS settings of every connection to a worker, for other readers built on this client (releases). */
  readonly connectOptions: { ca: Buffer } | undefined;
  private agent: Dispatcher | undefined;
  /** GETs of JSON answers (cluster, stat, list, status). */
  private readonly json: JsonGetter;
  private readonly timeouts: PeerTimeouts;
  private info: ClusterInfo | undefined;
  private ring: HashRing | undefined;
  private reader: ClusterReader | undefined;
  private refreshedAt = 0;
  private readonly sources = new Map<string, Ufs>();
  private readonly pages: PageCache;

  constructor(private readonly options: FanoutClientOptions = {}) {
    const endpoint = options.endpoint ?? process.env.FANOUT_ENDPOINT ?? DEFAULT_ENDPOINT;
    this.endpoints = (Array.isArray(endpoint) ? endpoint : [endpoint]).map(checkEndpoint);
    this.credentials = new ClientCredentials(options.token || undefined);
    this.pages = new PageCache(options.pageCacheBytes ?? 16 * 1024 * 1024);
    this.timeouts = { ...DEFAULT_PEER_TIMEOUTS };
    for (const [key, value] of Object.entries(options.timeouts ?? {})) {
      if (value !== undefined) {
        if (!Number.isInteger(value) || value <= 0) throw new FanoutError('INVALID_ARGUMENT', `timeouts.${key} must be a positive integer (ms)`);
        this.timeouts[key as keyof PeerTimeouts] = value;
      }
    }
    const ca = readCa(options.ca ?? process.env.FANOUT_CA);
    this.connectOptions = tlsConnectOptions(ca);
    this.json = new JsonGetter(this.timeouts, this.connectOptions);
    this.fetcher = this.newPageFetcher();
    const first = this.endpoints[0]!;
    this.pageReporter = new HttpPageReporter({ headers: () => this.credentials.headersFor(first), connect: this.connectOptions, timeoutMs: Math.min(5000, this.timeouts.firstByteMs) });
  }

  /** Dispatcher of admin requests to workers: the CA of `ca` and the deadlines of `timeouts`. */
  get dispatcher(): Dispatcher {
    this.agent ??= new (undici().Agent)({
      connect: this.connectOptions,
      connectTimeout: this.timeouts.connectMs,
      headersTimeout: this.timeouts.firstByteMs,
      bodyTimeout: this.timeouts.idleMs,
    });
    return this.agent;
  }

  /** Cluster facts (members, page size), refreshed at most every membershipRefreshMs. */
  async cluster(force = false): Promise<ClusterInfo> {
    const maxAge = this.options.membershipRefreshMs ?? 10_000;
    if (this.info && !force && Date.now() - this.refreshedAt < maxAge) return this.info;
    const info: ClusterInfo = parseAnswer(clusterInfoSchema, await this.getJson(ROUTES.cluster), ROUTES.cluster);
    this.info = info;
    this.refreshedAt = Date.now();
    this.ring = new HashRing(info.members);
    this.fetcher.retain(info.members);
    return info;
  }

  async stat(path: string): Promise<StatResult> {
    const target = parseFanoutPath(path);
    const info = (await this.getJson(`/v1/stat/${encodeUrlPath(target.mount)}/${encodeUrlPath(target.path)}`)) as FileInfo;
    return { ...info, mount: target.mount };
  }

  async list(path: string): Promise<DirEntry[]> {
    const target = parseFanoutPath(path);
    const suffix = target.mount ? `/${encodeUrlPath(target.mount)}/${encodeUrlPath(target.path)}` : '/';
    const body = (await this.getJson(`/v1/list${suffix}`)) as { entries: DirEntry[] };
    return body.entries;
  }

  /**
   * Streams a file, or bytes [start, end) of it, at the version current when the read starts:
   * a source change during the read fails it (SOURCE_CHANGED) rather than mixing versions.
   */
  async createReadStream(path: string, options: ReadOptions = {}): Promise<Readable & { file: StatResult }> {
    const file = await this.stat(path);
    return this.readFile(file, options);
  }

  /** Like createReadStream for a file already stat'ed (its version is what gets read). */
  async readFile(file: StatResult, options: ReadOptions = {}): Promise<Readable & { file: StatResult }> {
    const reader = await this.clusterReader();
    const stream = reader.read(file.mount, file, options.start ?? 0, options.end ?? file.size, options.signal);
    return Object.assign(stream, { file });
  }

  /**
   * The bytes of readFile() as one array of chunks per page, in order, for sinks that write a
   * page at a time (`fanout cat`: one writev per page rather than a stream write per chunk).
   * Stopping early (return, break) aborts the fetches in flight.
   */
  async *readPages(file: StatResult, options: ReadOptions = {}): AsyncGenerator<Buffer[]> {
    const reader = await this.clusterReader();
    yield* reader.pages(file.mount, file, options.start ?? 0, options.end ?? file.size, options.signal);
  }

  /**
   * Page `index` of a file already stat'ed (at its version), as verified chunks. Served from the
   * client's shared page cache when recent, and fetched once however many callers ask for it
   * at the same time. For readers that do their own readahead (the FUSE mount).
   */
  async readPage(file: StatResult, index: number): Promise<Buffer[]> {
    const reader = await this.clusterReader();
    const { pageSize } = this.info!;
    const ref = { mount: file.mount, path: file.path, version: file.version, size: file.size, index };
    const { start, end } = pageSpan(index, file.size, pageSize);
    return this.pages.get(pageKey(ref, pageSize), end - start, () => reader.fetchPage(ref));
  }

  /**
   * Page `index` of a file already stat'ed, verified, fetched now (no shared cache): for
   * writers that place pages themselves (`fanout cp` writes each at its offset as it arrives).
   */
  /**
   * Gives back the chunks of a page from readPages() or fetchPage() once they are written out
   * (in the write's callback): the memory they were received in is read into again, which is
   * what makes receiving cost no more than a raw socket (lib/leanhttp/slabs.ts). Optional: a
   * page never given back is garbage-collected. Never for readPage()'s pages (the page cache
   * shares them).
   */
  releasePage(page: Buffer[]): void {
    for (const chunk of page) this.fetcher.release(chunk);
  }

  async fetchPage(file: StatResult, index: number, signal?: AbortSignal): Promise<Buffer[]> {
    const reader = await this.clusterReader();
    return reader.fetchPage({ mount: file.mount, path: file.path, version: file.version, size: file.size, index }, signal);
  }

  /** Hits, joins and fetches of readPage()'s shared page cache. */
  pageCacheStats(): ReturnType<PageCache['stats']> {
    return this.pages.stats();
  }

  /** Every member's counters, plus cluster totals. Unreachable members are reported, not fatal. */
  async status(): Promise<ClusterStatus> {
    const info = await this.cluster(true);
    const members = await Promise.all(
      info.members.map(async (member) => {
        try {
          const status: WorkerStatus = parseAnswer(workerStatusSchema, await this.getJsonFrom(member.url, ROUTES.status), `${member.url}${ROUTES.status}`);
          return { ...status, id: member.id, url: member.url, reachable: true };
        } catch (err) {
          return { id: member.id, url: member.url, capacity: member.capacity, reachable: false, error: (err as Error).message };
        }
      }),
    );
    const sum = (pick: (m: Partial<WorkerStatus>) => number | undefined) => members.reduce((total, m) => total + (pick(m) ?? 0), 0);
    const hits = sum((m) => m.hits);
    const misses = sum((m) => m.misses);
    return {
      members,
      stale: info.stale,
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
   * A page fetcher that carries this client's credentials (for layers that place pages
   * themselves, such as release fetches). Page requests do not name their worker's address,
   * so they carry the token of the first endpoint: with a published serve token that is the
   * one worker of a single-node cluster; FANOUT_TOKEN or the token option covers them all.
   */
  newPageFetcher(options: { connectionsPerWorker?: number; preload?: boolean } = {}): PageFetcher {
    const first = this.endpoints[0]!;
    const { preload, ...rest } = options;
    // Preloads (release staging) say so on every page request: a line serves them after reads.
    const headers = () => ({ ...this.credentials.headersFor(first), ...(preload ? { [HEADERS.trafficClass]: 'preload' } : {}) });
    return new PageFetcher({ headers, connect: this.connectOptions, timeouts: this.timeouts, ...rest });
  }

  /** POSTs an admin call (JSON in, JSON out) to one worker, with the admin token. */
  async adminPost(base: string, route: string, body: unknown, timeoutMs = 600_000): Promise<unknown> {
    let response;
    try {
      response = await undici().request(base + route, {
        method: 'POST',
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json', ...this.credentials.headersFor(base) },
        dispatcher: this.dispatcher,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      throw new FanoutError('WORKER_UNAVAILABLE', `cannot reach ${base}: ${(err as Error).message}`, { cause: err });
    }
    return jsonBody(base + route, response);
  }

  async close(): Promise<void> {
    await this.fetcher.close();
    await this.pageReporter.close();
    await this.agent?.close().catch(() => {});
    this.json.close();
    await Promise.all([...this.sources.values()].map((s) => s.close?.()));
  }

  private async clusterReader(): Promise<ClusterReader> {
    const info = await this.cluster();
    if (!this.reader) {
      this.reader = new ClusterReader({
        placement: () => this.ring!,
        fetcher: this.fetcher,
        pageSize: info.pageSize,
        concurrency: this.options.concurrency ?? 8,
        replication: info.replication,
        hedge: this.options.hedge ?? (this.options.hedgeDelayMs !== undefined ? parseHedge(this.options.hedgeDelayMs) : 'auto'),
        sourceFallback: this.options.sourceFallback ? this.readFromSource : undefined,
        // A failing worker may mean the membership changed: refresh it in the background.
        onWorkerFailure: () => void this.cluster(true).catch(() => {}),
        reporter: this.pageReporter,
      });
    }
    return this.reader;
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

  /** GET JSON from the first endpoint (or known member) that answers. */
  private async getJson(path: string): Promise<unknown> {
    const known = [...new Set([...this.endpoints, ...(this.info?.members.map((m) => m.url) ?? [])])];
    // Workers this client saw stall or fail are asked last, so a stopped endpoint costs one deadline, not one per call.
    const demoted = new Set(this.info?.members.filter((m) => this.reader?.health.isDemoted(m.id)).map((m) => m.url));
    const candidates = [...known.filter((url) => !demoted.has(url)), ...known.filter((url) => demoted.has(url))];
    let lastError: unknown;
    for (const base of candidates) {
      try {
        return await this.getJsonFrom(base, path);
      } catch (err) {
        if (err instanceof FanoutError && err.code !== 'WORKER_UNAVAILABLE') throw err;
        lastError = err;
      }
    }
    throw lastError;
  }

  private async getJsonFrom(base: string, path: string): Promise<unknown> {
    let response;
    try {
      response = await this.json.get(base + path, this.credentials.headersFor(base));
    } catch (err) {
      throw this.unreachable(base, err);
    }
    return parseJsonBody(base + path, response.statusCode, response.text);
  }

  private unreachable(base: string, err: unknown): FanoutError {
    const timeout = describeTimeout((err as { code?: string })?.code, this.timeouts);
    return new FanoutError('WORKER_UNAVAILABLE', `cannot reach fanout at ${base}: ${timeout ?? (err as Error).message}${certificateHint(err)}`, { cause: err });
  }
}

/** A worker's JSON answer, or its error (with the worker's code) for any status but 200. */
async function jsonBody(url: string, response: Dispatcher.ResponseData): Promise<unknown> {
  return parseJsonBody(url, response.statusCode, await response.body.text());
}

function parseJsonBody(url: string, statusCode: number, text: string): unknown {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new FanoutError('WORKER_UNAVAILABLE', `${url} answered HTTP ${statusCode} with a non-JSON body`);
  }
  if (statusCode !== 200) throw errorFromJSON(body, statusCode);
  return body;
}

/** An endpoint is an http(s) URL of a worker; anything else fails here, not as a fetch error later. */
export function checkEndpoint(endpoint: string): string {
  let url: URL | undefined;
  try {
    url = new URL(endpoint);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || !url.hostname) {
    throw new FanoutError('INVALID_ARGUMENT', `endpoint "${String(endpoint).slice(0, 200)}" is not a worker URL: expected http://HOST:PORT or https://HOST:PORT`);
  }
  return endpoint.replace(/\/+$/, '');
}
