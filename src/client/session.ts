import type { Dispatcher } from 'undici';
import { monotonicClock, type Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import type { Member } from '../core/types.js';
import { ClusterReader, HttpPageReporter, PageFetcher, WorkerHealth, describeTimeout, missedDeadline, type ClusterReaderOptions, type PageFetcherOptions, type PeerTimeouts } from '../lib/cluster/index.js';
import { HashRing } from '../lib/hashring/index.js';
import { undici } from '../lib/http/undici.js';
import { certificateHint, type ClientTrust } from '../lib/tls/client.js';
// No zod on the read path (see clusterinfo.ts): `fanout cat` pays for every module it loads.
import { HEADERS, ROUTES } from '../lib/wire/protocol.js';
import { checkClusterInfo, type ClusterInfoAnswer } from '../lib/wire/clusterinfo.js';
import { JsonGetter, MAX_JSON_ANSWER } from './jsonget.js';
import { BatchPageReader } from './batchreader.js';
import { parseJsonBody } from './answers.js';

/** A worker's `/v1/cluster` answer, as checked on the read path (lib/wire/clusterinfo.ts). */
export type ClusterInfo = ClusterInfoAnswer;

/** The Authorization header for a worker's URL (a token, a published serve token, a peer credential). */
export interface SessionCredentials {
  headersFor(url: string): Record<string, string>;
}

export interface ClusterSessionOptions {
  /** Workers asked for the member list. None for a worker, whose members are pushed (setMembers). */
  endpoints: string[];
  credentials: SessionCredentials;
  /** TLS settings of every connection to a worker (the CA bundle). */
  connect?: ClientTrust;
  timeouts: PeerTimeouts;
  /** How old the member list may get before a read refreshes it. Default 10 s. */
  membershipRefreshMs?: number;
  /** Page connections per worker (raised by users that want more, see wantConnections). Default 8. */
  connectionsPerWorker?: number;
  /** Deadline of a report of a corrupt page. Default: 5 s or the first-byte deadline if shorter. */
  reportTimeoutMs?: number;
  /** Page requests may ask for a direct source read (only holders of the cluster secret may). */
  direct?: boolean;
  /** Builds the page fetcher: a worker's takes its own pages from its store first. */
  newFetcher?: (options: PageFetcherOptions) => PageFetcher;
  clock?: Clock;
}

/** What a session has done, for tests and status: how many users, member refreshes and pools. */
export interface SessionStats {
  users: number;
  memberRefreshes: number;
  readers: number;
  connectionPools: number;
  /** Pools of JSON requests (stat, list, cluster, status) open. */
  jsonPools: number;
  closed: boolean;
}

/** A reader's own settings; the session supplies members, pools, health and reports. */
export type SessionReaderOptions = Omit<ClusterReaderOptions, 'placement' | 'fetcher' | 'health' | 'reporter'>;

/**
 * Everything a process keeps about one cluster: the member list and its refresh, the ring, the
 * page connection pools, what is known of each worker's health, the reporter of corrupt pages
 * and the pool of admin/JSON requests. The SDK's clients, the release fetcher, the FUSE mount,
 * `fanout load` and a worker's peer fills each used to build their own; a process that mounts
 * and syncs, or a worker filling from peers, now holds one set of connections and one refresh.
 * SDK clients share one per endpoints and credentials (sharedSession); a worker builds its own.
 */
export class ClusterSession {
  readonly fetcher: PageFetcher;
  readonly reporter: HttpPageReporter;
  /** Failures and slowness of each worker, seen by every reader of this session. */
  readonly health: WorkerHealth;
  readonly connectOptions: ClientTrust | undefined;
  private readonly json: JsonGetter;
  private readonly clock: Clock;
  private agent: Dispatcher | undefined;
  private current: ClusterInfo | undefined;
  private answeredBy: string | undefined;
  private ringNow: HashRing | undefined;
  private refreshedAt = 0;
  private refreshing: Promise<ClusterInfo> | undefined;
  private refreshes = 0;
  private readerCount = 0;
  private users = 0;
  private isClosed = false;
  /** Told when the last user released the session (the registry forgets it). */
  onClosed: (() => void) | undefined;

  constructor(private readonly options: ClusterSessionOptions) {
    this.clock = options.clock ?? monotonicClock;
    this.connectOptions = options.connect;
    this.health = new WorkerHealth(this.clock);
    this.json = new JsonGetter(options.timeouts, options.connect);
    const first = options.endpoints[0] ?? '';
    // Page requests do not name their worker's address, so they carry the first endpoint's token
    // (the one worker of a single-node cluster with a published token; FANOUT_TOKEN covers them all).
    const headers = () => options.credentials.headersFor(first);
    const fetcherOptions: PageFetcherOptions = { headers, connect: options.connect, timeouts: options.timeouts, direct: options.direct, connectionsPerWorker: options.connectionsPerWorker ?? 8 };
    this.fetcher = options.newFetcher ? options.newFetcher(fetcherOptions) : new PageFetcher(fetcherOptions);
    this.reporter = new HttpPageReporter({ headers, connect: options.connect, timeoutMs: options.reportTimeoutMs ?? Math.min(5000, options.timeouts.firstByteMs) });
  }

  /** The member list last learnt (undefined before the first cluster()). */
  get info(): ClusterInfo | undefined {
    return this.current;
  }

  /** The base URL of the worker whose answer `info` is (its `membership` says where it stands). */
  get infoFrom(): string | undefined {
    return this.answeredBy;
  }

  /** The ring of the current members (placement of every reader of this session). */
  get ring(): HashRing {
    if (!this.ringNow) throw new FanoutError('NO_WORKERS', 'the cluster session has no members yet');
    return this.ringNow;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Cluster facts, refreshed at most every membershipRefreshMs; concurrent callers share one request. */
  async cluster(force = false): Promise<ClusterInfo> {
    const maxAge = this.options.membershipRefreshMs ?? 10_000;
    if (this.current && !force && this.clock.now() - this.refreshedAt < maxAge) return this.current;
    this.refreshing ??= this.refresh().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  /** Members pushed by their owner (a worker's membership) instead of learnt from an endpoint. */
  setMembers(members: Member[]): void {
    this.ringNow = new HashRing(members);
    this.fetcher.retain(members);
  }

  /**
   * A reader over this session's members, pools and health. A failing worker may mean the
   * membership changed: sessions that learn members from endpoints refresh it in the background.
   */
  reader(options: SessionReaderOptions): ClusterReader {
    this.readerCount++;
    const discover = this.options.endpoints.length > 0;
    return new ClusterReader({
      clock: this.clock,
      ...options,
      placement: () => this.ring,
      fetcher: this.fetcher,
      health: this.health,
      reporter: this.reporter,
      onWorkerFailure: (member, err) => {
        if (discover) void this.cluster(true).catch(() => {});
        options.onWorkerFailure?.(member, err);
      },
    });
  }

  /**
   * Whole small pages in batches (POST /v1/pages) over this session's ring, credentials and
   * dispatcher; what a batch cannot bring is read by `reader`, page by page (batchreader.ts).
   */
  batchReader(reader: Pick<ClusterReader, 'fetchPage'>, options: { pageSize: number; preload?: boolean; direct?: boolean }): BatchPageReader {
    const first = this.options.endpoints[0] ?? '';
    return new BatchPageReader({
      pageSize: options.pageSize,
      preload: options.preload,
      direct: options.direct === true && this.options.direct === true,
      owners: (key) => this.ring.owners(key, 1),
      headers: () => this.options.credentials.headersFor(first),
      dispatcher: () => this.dispatcher,
      // Batches share the page connections when they are lean ones (FANOUT_PAGE_TRANSPORT=undici: the admin dispatcher).
      lean: this.fetcher.canPost ? { post: (member, path, headers, body) => this.fetcher.post(member, path, headers, body)!, share: (view) => this.fetcher.share(view), release: (chunk) => this.fetcher.release(chunk) } : undefined,
      fallback: (ref, signal) => reader.fetchPage(ref, signal),
      isDemoted: (id) => this.health.isDemoted(id),
    });
  }

  /** A user that keeps many pages in flight (release staging) asks for more connections per worker. */
  wantConnections(perWorker: number): void {
    this.fetcher.raiseConnections(perWorker);
  }

  /** A page fetcher with its own pools and this session's credentials, TLS and deadlines. */
  newPageFetcher(options: { connectionsPerWorker?: number; preload?: boolean } = {}): PageFetcher {
    const first = this.options.endpoints[0] ?? '';
    const { preload, ...rest } = options;
    // Preloads say so on every page request: a line serves them after reads clients wait for.
    const headers = () => ({ ...this.options.credentials.headersFor(first), ...(preload ? { [HEADERS.trafficClass]: 'preload' } : {}) });
    return new PageFetcher({ headers, connect: this.connectOptions, timeouts: this.options.timeouts, ...rest });
  }

  /** Dispatcher of admin requests to workers: the session's CA and deadlines. */
  get dispatcher(): Dispatcher {
    this.agent ??= new (undici().Agent)({
      connect: this.connectOptions,
      connectTimeout: this.options.timeouts.connectMs,
      headersTimeout: this.options.timeouts.firstByteMs,
      bodyTimeout: this.options.timeouts.idleMs,
    });
    return this.agent;
  }

  /** GET JSON from the first endpoint (or known member) that answers; workers seen failing are asked last. */
  async getJson(path: string): Promise<unknown> {
    return (await this.getJsonAnswer(path)).body;
  }

  /** getJson's answer and the worker (base URL) that gave it. */
  private async getJsonAnswer(path: string): Promise<{ base: string; body: unknown }> {
    const known = [...new Set([...this.options.endpoints, ...(this.current?.members.map((m) => m.url) ?? [])])];
    // A stopped endpoint costs one deadline, not one per call.
    const demoted = new Set(this.current?.members.filter((m) => this.health.isDemoted(m.id)).map((m) => m.url));
    const candidates = [...known.filter((url) => !demoted.has(url)), ...known.filter((url) => demoted.has(url))];
    let lastError: unknown = new FanoutError('NO_WORKERS', 'no worker endpoint to ask');
    for (const base of candidates) {
      // A request that failed because the session closed under it is not sent to the next worker.
      if (this.isClosed) throw new FanoutError('ABORTED', 'the cluster session was closed (its last client closed)');
      try {
        return { base, body: await this.getJsonFrom(base, path) };
      } catch (err) {
        // A worker at a limit (its source listings, say) is asked again later; another may answer now.
        if (err instanceof FanoutError && err.code === 'OVERLOADED') {
          lastError = err;
          continue;
        }
        if (err instanceof FanoutError && err.code !== 'WORKER_UNAVAILABLE') throw err;
        this.endpointFailed(base, missedDeadline(err));
        lastError = err;
      }
    }
    throw lastError;
  }

  /**
   * A member that did not answer a JSON request is asked last for a while, as a reader's page
   * failures do: before, a stopped endpoint cost every stat and listing one full first-byte
   * deadline (30 s) before the next worker was asked, and a mount's `ls` waited that per syscall
   * (found by a fault hunt). A deadline missed keeps it last longer than a refused connection.
   */
  private endpointFailed(base: string, timedOut: boolean): void {
    const member = this.current?.members.find((m) => m.url === base);
    if (member) this.health.failed(member.id, timedOut);
  }

  /** GET JSON from one worker; `deadlineMs` bounds the whole answer (a status), on top of the session's deadlines. */
  async getJsonFrom(base: string, path: string, deadlineMs?: number): Promise<unknown> {
    let response;
    try {
      response = await this.json.get(base + path, this.options.credentials.headersFor(base), deadlineMs === undefined ? undefined : AbortSignal.timeout(deadlineMs));
    } catch (err) {
      if (deadlineMs !== undefined && (err as Error)?.name === 'TimeoutError') {
        this.endpointFailed(base, true);
        throw new FanoutError('WORKER_UNAVAILABLE', `${base}${path} gave no answer within ${deadlineMs} ms`, { cause: err });
      }
      const timeout = describeTimeout((err as { code?: string })?.code, this.options.timeouts);
      throw new FanoutError('WORKER_UNAVAILABLE', `cannot reach fanout at ${base}: ${timeout ?? (err as Error).message}${certificateHint(err)}`, { cause: err });
    }
    return parseJsonBody(base + path, response.statusCode, response.text);
  }

  /**
   * POSTs an admin call (JSON in, JSON out) to one worker, with that worker's token. Without
   * timeoutMs the session's peer deadlines apply (30 s to the headers by default): pin, free
   * and TTL answer at once, so a stopped worker must cost one such deadline, not ten minutes.
   * Only a call the worker works on before answering (a load) passes a longer one.
   */
  async adminPost(base: string, route: string, body: unknown, timeoutMs?: number): Promise<unknown> {
    let response;
    try {
      response = await undici().request(base + route, {
        method: 'POST',
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json', ...this.options.credentials.headersFor(base) },
        dispatcher: this.dispatcher,
        ...(timeoutMs === undefined ? {} : { headersTimeout: timeoutMs, bodyTimeout: timeoutMs }),
      });
    } catch (err) {
      const timeouts = timeoutMs === undefined ? this.options.timeouts : { ...this.options.timeouts, firstByteMs: timeoutMs, idleMs: timeoutMs };
      const timeout = describeTimeout((err as { code?: string })?.code, timeouts);
      throw new FanoutError('WORKER_UNAVAILABLE', timeout ? `${base}${route} ${timeout}` : `cannot reach ${base}: ${(err as Error).message}`, { cause: err });
    }
    return parseJsonBody(base + route, response.statusCode, await boundedText(base + route, response.body));
  }

  /** One more user (a client) shares this session; each calls release() once when done. */
  retain(): this {
    this.users++;
    return this;
  }

  /** A user is done: the last one closes the session. */
  async release(): Promise<void> {
    if (this.users > 0) this.users--;
    if (this.users === 0) await this.close();
  }

  stats(): SessionStats {
    return { users: this.users, memberRefreshes: this.refreshes, readers: this.readerCount, connectionPools: this.fetcher.poolCount(), jsonPools: this.json.poolCount(), closed: this.isClosed };
  }

  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    this.onClosed?.();
    await this.fetcher.close();
    await this.reporter.close();
    await this.agent?.close().catch(() => {});
    this.json.close();
  }

  private async refresh(): Promise<ClusterInfo> {
    this.refreshes++;
    const { base, body } = await this.getJsonAnswer(ROUTES.cluster);
    const info: ClusterInfo = checkClusterInfo(body, ROUTES.cluster);
    this.current = info;
    this.answeredBy = base;
    this.refreshedAt = this.clock.now();
    this.setMembers(info.members);
    return info;
  }
}

/** An admin answer's text, at most MAX_JSON_ANSWER bytes (a worker cannot make this process buffer without end). */
async function boundedText(url: string, body: AsyncIterable<Buffer> & { destroy(): void }): Promise<string> {
  const parts: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of body) {
      bytes += chunk.length;
      if (bytes > MAX_JSON_ANSWER) {
        body.destroy();
        throw new FanoutError('WORKER_UNAVAILABLE', `${url} answered more than ${MAX_JSON_ANSWER} bytes`);
      }
      parts.push(chunk);
    }
  } catch (err) {
    if (err instanceof FanoutError) throw err;
    throw new FanoutError('WORKER_UNAVAILABLE', `${url}: the answer failed: ${(err as Error).message}`, { cause: err });
  }
  return Buffer.concat(parts).toString('utf8');
}
