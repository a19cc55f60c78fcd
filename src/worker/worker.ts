import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { answerUnparsable, checkHostHeader, ConnectionCap, isHeaderOverflow, listenHttp } from '../lib/http/index.js';
import { pino, destination, type Logger } from 'pino';
import { systemClock, type Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import type { Member, WorkerStatus } from '../core/types.js';
import { AccessGate } from '../lib/auth/index.js';
import { ClusterReader, HttpPageReporter } from '../lib/cluster/index.js';
import { mountSpec, parseListen, type WorkerConfig } from '../lib/config/index.js';
import { HashRing } from '../lib/hashring/index.js';
import { EtcdMembership, StaticMembership, type Membership } from '../lib/membership/index.js';
import { WorkerMetrics } from '../lib/metrics/index.js';
import { PageStore } from '../lib/pagestore/index.js';
import { openUfs, type Ufs } from '../lib/ufs/index.js';
import { CertificateReloader, createApiServer, readCa, readTlsPair, tlsConnectOptions } from '../lib/tls/index.js';
import { S3Gateway } from '../gateway/index.js';
import { sendError } from './http.js';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { PagePolicy } from '../lib/pagestore/index.js';
import { Admin } from './admin.js';
import { LocalFirstFetcher } from './localpages.js';
import { PageService } from './pageservice.js';
import { returnSlice } from './flow.js';
import { pagedChunks, sendRange } from './rangesend.js';
import { DATA_WINDOW, Routes } from './routes.js';
import { localSpansFor, type LocalSpanDeps } from './localspans.js';
import { PageReports } from './reports.js';
import { Scrubber } from '../lib/pagestore/index.js';
import { SourceBudget } from './sourcebudget.js';
import { TtlCache } from './sourcecache.js';
import { sendPath, setSendThreads } from '../lib/sendfile/index.js';
import { checksumPath } from '../lib/checksum/index.js';
import type { Dashboard } from './dashboard/index.js';
import { dashboardFor } from './dashboard/wiring.js';
import { BufferReclaimer } from './memory.js';

export interface WorkerOptions {
  clock?: Clock;
  logger?: Logger;
  /** Replaces the membership built from config (tests, embedded use). */
  membership?: Membership;
}

/**
 * One cache host: a page store, the sources it reads from, its view of the cluster, and the
 * HTTP API that serves pages, ranges, stat, list, health and metrics.
 */
export class Worker {
  readonly logger: Logger;
  readonly store: PageStore;
  readonly metrics: WorkerMetrics;
  readonly sourceBudget: SourceBudget;
  readonly membership: Membership;
  readonly pages: PageService;
  /** The S3-compatible endpoint, when config.gateway.listen is set. */
  readonly gateway: S3Gateway | undefined;
  /** Pins and TTLs beyond LRU; the admin API (load, pin, free, ttl) that sets them. */
  readonly policy: PagePolicy;
  readonly admin: Admin;
  /** Tokens and roles for the HTTP API; the peer credential this worker sends and accepts. */
  readonly gate: AccessGate;
  /** /ui, the last 15 minutes of this worker, and the page's data calls. */
  readonly dashboard: Dashboard;
  private readonly mounts = new Map<string, Ufs>();
  private readonly server: Server | HttpsServer;
  /** Re-reads the API's certificate when its files change (with config.tls). */
  private readonly certificates: CertificateReloader | undefined;
  private readonly connections: ConnectionCap;
  private readonly stopping = new AbortController();
  private readonly clock: Clock;
  private readonly reader: ClusterReader;
  /** Pages this worker owns and holds are read from its store, not through its own HTTP API. */
  readonly fetcher: LocalFirstFetcher;
  /** What /v1/data and S3 GetObject need to send stored pages by the kernel. */
  readonly localSpans: LocalSpanDeps;
  /** Readers' reports of pages that failed their checksum (POST /v1/report). */
  readonly reports: PageReports;
  private readonly scrubber: Scrubber;
  /** Tells a peer that a page it sent failed its checksum. */
  private readonly pageReporter: HttpPageReporter;
  private ring: HashRing;
  private routes: Routes;
  private boundUrl = '';
  private diskLimited = false;
  private warnedNoSecret = false;
  /** Requests of the HTTP API being answered, and what a drain waits on (see stop). */
  private requestsInFlight = 0;
  private onIdle: (() => void) | undefined;

  constructor(
    readonly config: WorkerConfig,
    options: WorkerOptions = {},
  ) {
    const clock = options.clock ?? systemClock;
    this.clock = clock;
    // Peers over https:// are verified against tls.ca, or the system store without one.
    this.logger = options.logger ?? pino({ level: config.logLevel, base: { worker: config.id } }, destination(2));
    this.gate = new AccessGate(config.auth);
    // Peer fills and direct reads carry the peer credential; without a secret they go out as ordinary requests.
    this.fetcher = new LocalFirstFetcher(() => this, {
      headers: () => this.gate.peerHeaders(),
      direct: this.gate.peer !== undefined,
      connect: tlsConnectOptions(readCa(config.tls?.ca, 'INVALID_CONFIG')),
      timeouts: { connectMs: config.timeouts.peerConnect, firstByteMs: config.timeouts.peerFirstByte, idleMs: config.timeouts.peerIdle },
    });
    const budgets: Record<string, number> = {};
    for (const name of Object.keys(config.mounts)) {
      const { uri, sourceRate, versioning } = mountSpec(config, name);
      const { sourceConnect, sourceFirstByte, sourceIdle } = config.timeouts;
      const deadlines = { connectMs: sourceConnect, firstByteMs: sourceFirstByte, idleMs: sourceIdle };
      this.mounts.set(name, openUfs(uri, config.s3, { label: `/${name}`, versioning, deadlines }));
      budgets[name] = sourceRate;
    }
    this.policy = new PagePolicy(join(config.dataDir, 'policy.json'), clock, {
      onCorrupt: ({ file, movedTo, reason }) =>
        this.logger.error({ file, movedTo, reason }, `state file ${file} is corrupt: moved aside to ${movedTo ?? '(could not move)'}; starting without its pins and TTLs`),
    });
    this.store = new PageStore(
      { dir: config.dataDir, capacity: config.capacity, watermarks: config.watermarks, pageSize: config.pageSize, canEvict: (key) => !this.policy.isPinned(key), clock },
      {
        onEvict: (count) => this.metrics.evictions.inc(count),
        onWriteFailure: (reason) => this.metrics.storeWriteFailures.labels(reason).inc(),
        onCapacityChange: (effective, configured, disk) => {
          // One line when the disk starts or stops limiting the store, not one per check.
          if (effective < configured === this.diskLimited) return;
          this.diskLimited = effective < configured;
          const fields = { effective, configured, diskFree: disk?.free, diskTotal: disk?.total };
          if (this.diskLimited) this.logger.warn(fields, 'page store capacity lowered to what the disk can hold');
          else this.logger.info(fields, 'page store capacity back to the configured one');
        },
        onCorrupt: (key) => {
          this.metrics.checksumFailures.inc();
          this.logger.warn({ key }, 'page failed checksum verification on disk; dropped and will be refetched');
        },
      },
    );
    this.sourceBudget = new SourceBudget(budgets, config.workerSourceRate, clock);
    this.membership = options.membership ?? this.buildMembership();
    this.ring = new HashRing(this.membership.members());
    this.membership.on('change', (members: Member[]) => this.onMembershipChange(members));
    this.metrics = new WorkerMetrics({
      storeUsedBytes: () => this.store.used,
      storeCapacityBytes: () => this.store.capacity,
      storeConfiguredCapacityBytes: () => this.store.configuredCapacity,
      storeDiskFreeBytes: () => this.store.diskFree,
      storePages: () => this.store.pageCount,
      inflightSourceReads: () => this.pages.flights.inflight,
      members: () => this.ring.members().length,
      sourceRates: () => this.sourceBudget.rates(),
      membershipStale: () => this.membership.stale,
    });
    this.pages = new PageService({
      store: this.store,
      ufs: (mount) => this.ufs(mount),
      budget: this.sourceBudget,
      metrics: this.metrics,
      pageSize: config.pageSize,
      selfId: config.id,
      placement: () => this.ring,
      replication: config.replication,
      peers: this.fetcher,
      logger: this.logger,
      signal: this.stopping.signal,
      onStored: (key, ref) => this.policy.onStored(key, ref.mount, ref.path),
      limits: config.limits,
      clock,
    });
    this.pageReporter = new HttpPageReporter({ headers: () => this.gate.peerHeaders(), connect: tlsConnectOptions(readCa(config.tls?.ca, 'INVALID_CONFIG')), timeoutMs: 5000 });
    this.reports = new PageReports({ store: this.store, metrics: this.metrics, pageSize: config.pageSize, logger: this.logger });
    this.scrubber = new Scrubber(this.store, {
      rate: config.scrub.rate,
      clock,
      onScrubbed: (bytes) => this.metrics.scrubBytes.inc(bytes),
      onCorrupt: () => this.metrics.scrubCorruptPages.inc(),
      onError: (key, err) => this.logger.warn({ key, err: err.message }, 'scrub could not read a stored page'),
    });
    this.localSpans = { store: this.store, slots: this.pages.responseSlots, metrics: this.metrics, pageSize: config.pageSize, clientIdle: config.limits.clientIdle };
    this.reader = new ClusterReader({
      placement: () => this.ring,
      fetcher: this.fetcher,
      pageSize: config.pageSize,
      clock,
      maxWorkerAttempts: 3,
      replication: config.replication,
      hedge: 'auto', // a stopped peer must not stall /v1/data or S3 reads
      reporter: this.pageReporter,
    });
    this.routes = new Routes(this, this.reader, {
      stat: new TtlCache(config.statTtl, clock),
      list: new TtlCache(config.statTtl, clock),
    });
    const routes = this.routes;
    this.gateway = config.gateway.listen
      ? new S3Gateway(
          config.gateway,
          {
            mountNames: () => this.mountNames(),
            stat: async (mount, path) => routes.stat({ mount, path }),
            list: (mount, dir) => routes.listDir({ mount, path: dir }),
            read: (mount, file, start, end, signal) =>
              pagedChunks({ reader: this.reader, slots: this.pages.responseSlots, pageSize: config.pageSize, clock, signal, release: (c) => this.fetcher.release(c) }, mount, file, start, end),
            written: (chunk) => returnSlice(chunk) || this.fetcher.release(chunk),
            send: async (res, mount, file, start, end, signal, writeHead) => {
              const local = localSpansFor(res, this.localSpans, signal);
              if (!local) return false;
              const flow = this.pages.flow(res);
              const release = (c: Buffer) => this.fetcher.release(c);
              await sendRange(res, { reader: this.reader, slots: this.pages.responseSlots, flow, pageSize: config.pageSize, window: DATA_WINDOW, signal, release, local }, mount, file, start, end, writeHead);
              return true;
            },
          },
          { logger: this.logger, clock, tls: config.gateway.tls ?? config.tls, limits: config.limits },
        )
      : undefined;
    this.admin = new Admin({
      store: this.store,
      policy: this.policy,
      fetcher: this.fetcher,
      pageSize: config.pageSize,
      self: () => ({ ...this.self, url: this.boundUrl || this.config.advertiseUrl }),
      logger: this.logger,
      signal: this.stopping.signal,
    });
    this.dashboard = dashboardFor(this, clock);
    const tls = config.tls;
    this.server = createApiServer((req, res) => this.handle(req, res), { keepAliveTimeout: 30_000, tls: tls && readTlsPair(tls) });
    this.certificates = tls
      ? new CertificateReloader({ files: tls, apply: (pair) => (this.server as HttpsServer).setSecureContext(pair), logger: this.logger, clock })
      : undefined;
    answerUnparsable(this.server, (err) => {
      const error = isHeaderOverflow(err)
        ? new FanoutError('REQUEST_TOO_LARGE', 'request headers too large')
        : new FanoutError('INVALID_ARGUMENT', `malformed HTTP request (${err.code ?? err.message})`);
      const body = JSON.stringify({ error: error.toJSON() });
      return { status: error.status, headers: { 'content-type': 'application/json', 'x-fanout-error': error.code }, body };
    });
    this.connections = new ConnectionCap(this.server, config.limits);
  }

  get url(): string {
    return this.boundUrl;
  }

  get self(): Member {
    return { id: this.config.id, url: this.config.advertiseUrl, capacity: this.config.capacity };
  }

  members(): Member[] {
    return this.ring.members();
  }

  mountNames(): string[] {
    return [...this.mounts.keys()].sort();
  }

  ufs(mount: string): Ufs {
    const ufs = this.mounts.get(mount);
    if (!ufs) throw new FanoutError('UNKNOWN_MOUNT', `no mount named "${mount}" (known: ${this.mountNames().join(', ') || 'none'})`);
    return ufs;
  }

  async start(): Promise<void> {
    await mkdir(this.config.dataDir, { recursive: true });
    await this.policy.load();
    await this.store.open();
    setSendThreads(this.config.threads);
    this.store.watchDisk(this.stopping.signal).catch((err: unknown) => this.logger.warn({ err }, 'page store disk watch stopped'));
    void new BufferReclaimer({ clock: this.clock }).run(this.stopping.signal);
    this.scrubber.run(this.stopping.signal).catch((err: unknown) => this.logger.warn({ err }, 'page scrub stopped'));
    this.admin.start();
    this.dashboard.start();
    const { host, port } = parseListen(this.config.listen);
    this.boundUrl = await listenHttp(this.server, host, port);
    await this.certificates?.start();
    await this.membership.start();
    this.onMembershipChange(this.membership.members());
    await this.gateway?.start();
    this.logger.info({ url: this.boundUrl, mounts: this.config.mounts }, 'worker started');
    if (!this.gate.tokens.hasAdmin) this.logger.warn('no admin token configured (auth.tokens or FANOUT_TOKEN): every admin call will be refused');
  }

  /**
   * Leaves the membership first (with etcd, the lease is revoked: peers and clients drop this
   * worker from their rings at once), then, given `drainMs`, lets the API's requests in flight
   * finish for up to that long; then closes everything. The port stays open while draining: the
   * worker's own range reads fetch missing pages through it, and a client whose ring is not yet
   * updated is still answered rather than refused.
   */
  async stop(opts: { drainMs?: number } = {}): Promise<void> {
    await this.membership.stop().catch((err: unknown) => this.logger.warn({ err }, 'membership stop failed'));
    if (opts.drainMs) await this.drain(opts.drainMs);
    this.stopping.abort(new FanoutError('ABORTED', 'worker stopping'));
    await this.gateway?.stop();
    await this.certificates?.stop();
    this.admin.stop();
    await this.dashboard.stop();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    await this.fetcher.close();
    await this.pageReporter.close();
    await Promise.all([...this.mounts.values()].map((u) => u.close?.()));
  }

  /** Waits (at most `ms`) until no API request is in flight. */
  private async drain(ms: number): Promise<void> {
    if (this.requestsInFlight === 0) return;
    this.logger.info({ requests: this.requestsInFlight, drainMs: ms }, 'draining: waiting for requests in flight');
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.onIdle = resolve;
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.onIdle = undefined;
    if (this.requestsInFlight > 0) this.logger.warn({ requests: this.requestsInFlight }, 'drain time over: cutting the requests still in flight');
  }

  async status(): Promise<WorkerStatus> {
    const m = this.metrics;
    return {
      id: this.config.id,
      url: this.config.advertiseUrl,
      capacity: this.store.capacity,
      configuredCapacity: this.store.configuredCapacity,
      used: this.store.used,
      pages: this.store.pageCount,
      hits: await m.value(m.hits),
      misses: await m.value(m.misses),
      bytesServed: await m.value(m.bytesServed),
      bytesFromSource: await m.value(m.bytesFromSource),
      evictions: await m.value(m.evictions),
      inflightSourceReads: this.pages.flights.inflight,
      sourceRates: this.sourceBudget.rates(),
      sendPath: sendPath(),
      checksumPath: checksumPath(),
      // Kernel sends at once (with sendPath 'js' sends run on the JS thread and this does not apply).
      threads: this.config.threads,
    };
  }

  private buildMembership(): Membership {
    const { membership } = this.config;
    if (membership.etcd) {
      return new EtcdMembership({
        endpoints: membership.etcd.endpoints,
        prefix: membership.etcd.prefix,
        leaseTtlSeconds: membership.etcd.leaseTtlSeconds,
        tls: membership.etcd.tls,
        auth: membership.etcd.auth,
        self: this.self,
        logger: this.logger.child({ component: 'membership' }),
      });
    }
    return new StaticMembership(membership.static?.length ? membership.static : [this.self]);
  }

  private onMembershipChange(members: Member[]): void {
    this.ring = new HashRing(members.length > 0 ? members : [this.self]);
    this.sourceBudget.resplit(this.ring.members().length);
    this.fetcher.retain(this.ring.members());
    this.logger.info({ members: members.map((m) => m.id) }, 'membership changed');
    if (members.length > 1 && !this.gate.peer && !this.warnedNoSecret) {
      this.warnedNoSecret = true;
      this.logger.warn('no cluster secret (auth.clusterSecret or FANOUT_CLUSTER_SECRET): peers cannot ask each other for direct reads, so the loop guard of page forwarding is off');
    }
  }

  /**
   * The last-resort guard around a request's own code: whatever it throws, synchronously or
   * not, fails that request (INTERNAL with a log line) and never the process.
   */
  private handle(req: IncomingMessage, res: ServerResponse): void {
    const fail = (err: unknown) => {
      try {
        // A body abandoned part-way (over the admin limit) leaves the connection mid-message and
        // no longer read: close it after the answer, or the next request a keep-alive client sends
        // on it waits forever. (A body never touched is drained by node:http as usual.)
        const error = sendError(res, err, req.destroyed && !req.complete ? { connection: 'close' } : {});
        this.metrics.requestErrors.labels(error.code).inc();
        if (error.code === 'INTERNAL') this.logger.error({ err, url: req.url }, 'request failed unexpectedly');
        else if (error.status >= 500) this.logger.warn({ code: error.code, err: error.message, url: req.url }, 'request failed');
      } catch (cannotAnswer) {
        this.logger.error({ err: cannotAnswer, url: req.url }, 'request failed and could not be answered');
        res.destroy();
      }
    };
    // A request stream error (client reset mid-body) must not become an unhandled 'error'.
    req.on('error', () => res.destroy());
    res.on('error', () => {});
    this.requestsInFlight++;
    res.once('close', () => {
      if (--this.requestsInFlight === 0) this.onIdle?.();
    });
    if (this.connections.isExcess(req.socket)) {
      res.shouldKeepAlive = false;
      return fail(new FanoutError('OVERLOADED', `this worker serves at most ${this.config.limits.maxConnections} connections; retry shortly`));
    }
    try {
      checkHostHeader(req);
      this.routes.dispatch(req, res).catch(fail);
    } catch (err) {
      fail(err);
    }
  }
}
