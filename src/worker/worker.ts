import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { ConnectionCap, listenHttp, listensOnLoopbackOnly } from '../lib/http/index.js';
import { pino, destination, type Logger } from 'pino';
import { monotonicClock, wallClock, type Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import type { Member, WorkerStatus } from '../core/types.js';
import { AccessGate, DEFAULT_ATTEMPT_LIMITS, FailedAttempts } from '../lib/auth/index.js';
import type { ClusterReader } from '../lib/cluster/index.js';
import type { ClusterSession } from '../client/session.js';
import { parseListen, type WorkerConfig } from '../lib/config/index.js';
import type { Membership } from '../lib/membership/index.js';
import { WorkerMetrics } from '../lib/metrics/index.js';
import type { PageStore } from '../lib/pagestore/index.js';
import { FanoutUfs, type Ufs } from '../lib/ufs/index.js';
import { clusterIdOf } from './clusterid.js';
import { CertificateReloader, createApiServer, readCa, readTlsPair, tlsConnectOptions } from '../lib/tls/index.js';
import { S3Gateway } from '../gateway/index.js';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { PagePolicy } from '../lib/pagestore/index.js';
import { Admin } from './admin.js';
import type { LocalFirstFetcher } from './localpages.js';
import { PageService } from './pageservice.js';
import { Routes } from './routes.js';
import { FileInfoService } from './fileinfo.js';
import { SourceListings } from './listings.js';
import { gatewayBackend } from './gatewaybackend.js';
import { RequestGuard, answerMalformedRequests } from './requestguard.js';
import { lineSpecs, membershipFor, onGrantCapped, onLineRate, openMounts, peerSession, workerPageStore } from './parts.js';
import type { LocalSpanDeps } from './localspans.js';
import { PageReports } from './reports.js';
import { Scrubber } from '../lib/pagestore/index.js';
import { mountLineName, SourceBudget, type LineSpec } from './sourcebudget.js';
import { LineClient } from './lineclient.js';
import { TtlCache } from './sourcecache.js';
import { sendPath, setSendThreads } from '../lib/sendfile/index.js';
import { checksumPath } from '../lib/checksum/index.js';
import { containerCutNote, memoryPath } from '../lib/memory/index.js';
import type { Dashboard } from './dashboard/index.js';
import { dashboardFor } from './dashboard/wiring.js';
import { BufferReclaimer } from '../lib/memory/reclaim.js';
import { lockDir, type DirLockUse } from '../lib/dirlock/index.js';
import { isDiskFull } from '../lib/statefile/index.js';
import { fdLimitShortfall, openFileLimit } from '../lib/fdlimit/index.js';

export interface WorkerOptions {
  clock?: Clock;
  logger?: Logger;
  /** Replaces the membership built from config (tests, embedded use). */
  membership?: Membership;
}

/** One worker per data directory (lib/dirlock): the lock is `<dataDir>/.worker.lock`. */
const WORKER_DATA_DIR: DirLockUse = {
  name: '.worker.lock',
  option: 'dataDir',
  inUse: (dir, pid) => new FanoutError('DIR_IN_USE', `${dir} is the data directory of another running worker (pid ${pid}): one worker per data directory (give this one its own dataDir, --data-dir)`),
};

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
  private readonly mounts: Map<string, Ufs>;
  /** Same on every worker of this cluster: how a fanout:// source chain recognises a loop. */
  readonly clusterId: string;
  private readonly server: Server | HttpsServer;
  /** Re-reads the API's certificate when its files change (with config.tls). */
  private readonly certificates: CertificateReloader | undefined;
  private readonly connections: ConnectionCap;
  private readonly stopping = new AbortController();
  /** Gives the data directory back (set while this worker holds it). */
  private unlockDataDir: (() => Promise<void>) | undefined;
  private readonly clock: Clock;
  private readonly reader: ClusterReader;
  /** Pages this worker owns and holds are read from its store, not through its own HTTP API. */
  readonly fetcher: LocalFirstFetcher;
  /** Peers, ring, page pools, peer health and corrupt-page reports: one set for peer fills, reads and admin loads. */
  readonly session: ClusterSession;
  /** What /v1/data and S3 GetObject need to send stored pages by the kernel. */
  readonly localSpans: LocalSpanDeps;
  /** Readers' reports of pages that failed their checksum (POST /v1/report). */
  readonly reports: PageReports;
  private readonly scrubber: Scrubber;
  /** Renews this worker's line shares at coordinators on other workers. */
  private readonly lineClient: LineClient;
  private boundUrl = '';
  /** The API listens on a loopback address only: its requests must name a loopback host (RequestGuard). */
  private loopbackOnly = false;
  private warnedNoSecret = false;
  /** Fails a request whose code throws, never the process; counts requests for a drain. */
  private readonly guard: RequestGuard;

  constructor(
    readonly config: WorkerConfig,
    options: WorkerOptions = {},
  ) {
    const clock = options.clock ?? monotonicClock;
    // For what is persisted or compared with other hosts: policy.json's TTLs, the gateway's dates, the dashboard's samples.
    const wall = options.clock ?? wallClock;
    this.clock = clock;
    this.clusterId = clusterIdOf(config);
    this.logger = options.logger ?? pino({ level: config.logLevel, base: { worker: config.id } }, destination(2));
    // One table for the API, the dashboard and the S3 gateway: a guesser gets its refusals in all three.
    this.gate = new AccessGate(config.auth, new FailedAttempts(config.auth.attempts ?? DEFAULT_ATTEMPT_LIMITS, clock));
    ({ session: this.session, fetcher: this.fetcher } = peerSession(config, this.gate, clock, () => this));
    this.mounts = openMounts(config, this.clusterId);
    this.policy = new PagePolicy(join(config.dataDir, 'policy.json'), wall, {
      onCorrupt: ({ file, movedTo, reason }) =>
        this.logger.error({ file, movedTo, reason }, `state file ${file} is corrupt: moved aside to ${movedTo ?? '(could not move)'}; starting without its pins and TTLs`),
    });
    this.store = workerPageStore(config, clock, { policy: this.policy, metrics: () => this.metrics, logger: this.logger, wallClock: wall });
    this.lineClient = new LineClient({ headers: () => this.gate.peerHeaders(), connect: tlsConnectOptions(readCa(config.tls?.ca, 'INVALID_CONFIG')) });
    const { lines, mountLines } = lineSpecs(config);
    this.sourceBudget = new SourceBudget({
      lines,
      mountLines,
      workerRate: config.workerSourceRate,
      clock,
      self: config.id,
      coordinatorOf: (line) => this.session.ring.owners(`line:${line}`, 1)[0],
      members: () => this.session.ring.members().map((m) => m.id),
      holdsOwnId: () => this.membership.state() !== 'id-taken',
      askPeer: (coordinator, line, req, signal) => this.lineClient.renew(coordinator, line, req, signal),
      onUse: (line, cls, bytes) => this.metrics.lineBytes.labels(line, cls).inc(bytes),
      onGrantCapped: onGrantCapped(clock, () => this.metrics, this.logger),
      onLineRate: onLineRate(this.logger),
    });
    this.membership = options.membership ?? membershipFor(config.membership, this.self, this.logger);
    // Until the membership has started (the API already listens), this worker serves as a cluster of one.
    this.session.setMembers(this.membership.members().length > 0 ? this.membership.members() : [this.self]);
    this.membership.on('change', (members: Member[]) => this.onMembershipChange(members));
    this.metrics = new WorkerMetrics({
      datacenter: config.datacenter,
      storeUsedBytes: () => this.store.used,
      storePageBytes: () => this.store.pageBytes,
      storeCapacityBytes: () => this.store.capacity,
      storeConfiguredCapacityBytes: () => this.store.configuredCapacity,
      storeDiskFreeBytes: () => this.store.diskFree,
      storePages: () => this.store.pageCount,
      inflightSourceReads: () => this.pages.flights.inflight,
      members: () => this.session.ring.members().length,
      sourceRates: () => this.sourceBudget.rates(),
      membershipStale: () => this.membership.stale,
      membershipStatus: () => this.membership.status(),
      lines: () => this.sourceBudget.lines(),
    });
    this.gate.attempts!.onThrottled = (server) => this.metrics.authThrottled.labels(server).inc();
    this.pages = new PageService({
      store: this.store,
      ufs: (mount) => this.ufs(mount),
      budget: this.sourceBudget,
      metrics: this.metrics,
      pageSize: config.pageSize,
      selfId: config.id,
      holdsOwnId: () => this.membership.state() !== 'id-taken',
      placement: () => this.session.ring,
      replication: config.replication,
      peers: this.fetcher,
      reporter: this.session.reporter,
      logger: this.logger,
      signal: this.stopping.signal,
      onStoring: (key, ref) => this.policy.onStoring(key, ref.mount, ref.path),
      limits: config.limits,
      clock,
    });
    this.reports = new PageReports({ store: this.store, metrics: this.metrics, pageSize: config.pageSize, logger: this.logger });
    this.scrubber = new Scrubber(this.store, {
      rate: config.scrub.rate,
      // Small pages are paced as 1 MiB each: per-page syscalls, not bytes, are their cost.
      minPageCost: 1024 * 1024,
      clock,
      onScrubbed: (bytes) => this.metrics.scrubBytes.inc(bytes),
      onCorrupt: () => this.metrics.scrubCorruptPages.inc(),
      onError: (key, err) => this.logger.warn({ key, err: err.message }, 'scrub could not read a stored page'),
    });
    this.localSpans = { store: this.store, slots: this.pages.responseSlots, metrics: this.metrics, pageSize: config.pageSize, clientIdle: config.limits.clientIdle };
    this.reader = this.session.reader({
      pageSize: config.pageSize,
      maxWorkerAttempts: 3,
      replication: config.replication,
      hedge: 'auto', // a stopped peer must not stall /v1/data or S3 reads
    });
    const listings = new SourceListings({ concurrent: config.limits.sourceListings, queued: config.limits.sourceListingsQueued, clock });
    const files = new FileInfoService((mount) => this.ufs(mount), { stat: new TtlCache(config.statTtl, clock), list: new TtlCache(config.statTtl, clock) }, listings);
    this.gateway = config.gateway.listen
      ? new S3Gateway(
          config.gateway,
          gatewayBackend({
            mountNames: () => this.mountNames(),
            files,
            reader: this.reader,
            pages: this.pages,
            localSpans: this.localSpans,
            release: (chunk) => this.fetcher.release(chunk),
            pageSize: config.pageSize,
            clock,
          }),
          { logger: this.logger, clock: wall, tls: config.gateway.tls ?? config.tls, limits: config.limits, attempts: this.gate.attempts },
        )
      : undefined;
    this.admin = new Admin({
      store: this.store,
      policy: this.policy,
      fetcher: this.fetcher,
      pageSize: config.pageSize,
      checkMount: (mount) => void this.ufs(mount),
      self: () => ({ ...this.self, url: this.boundUrl || this.config.advertiseUrl }),
      logger: this.logger,
      signal: this.stopping.signal,
    });
    this.dashboard = dashboardFor(this, wall);
    const tls = config.tls;
    this.server = createApiServer((req, res) => this.guard.handle(req, res), { keepAliveTimeout: 30_000, tls: tls && readTlsPair(tls) });
    this.certificates = tls
      ? new CertificateReloader({ files: tls, apply: (pair) => (this.server as HttpsServer).setSecureContext(pair), logger: this.logger, clock })
      : undefined;
    answerMalformedRequests(this.server);
    this.connections = new ConnectionCap(this.server, config.limits);
    const routes = new Routes({
      config,
      gate: this.gate,
      files,
      ufs: (mount) => this.ufs(mount),
      mountNames: () => this.mountNames(),
      members: () => this.members(),
      membersStale: () => this.membership.stale,
      membership: () => this.membership.status(),
      membershipState: () => this.membership.state(),
      status: () => this.status(),
      metrics: this.metrics,
      pages: this.pages,
      reader: this.reader,
      localSpans: this.localSpans,
      release: (chunk) => this.fetcher.release(chunk),
      admin: this.admin,
      reports: this.reports,
      dashboard: this.dashboard,
      clusterId: this.clusterId,
      upstream: () => this.upstream(),
      storedSize: (key) => this.store.sizeOf(key),
      renewLine: (line, req) => this.sourceBudget.renew(line, req),
      session: this.session,
    });
    this.guard = new RequestGuard({
      logger: this.logger,
      metrics: this.metrics,
      connections: this.connections,
      maxConnections: config.limits.maxConnections,
      loopbackOnly: () => this.loopbackOnly,
      dispatch: (req, res) => routes.dispatch(req, res),
    });
  }

  get url(): string {
    return this.boundUrl;
  }

  get self(): Member {
    return { id: this.config.id, url: this.config.advertiseUrl, capacity: this.config.capacity, ...(this.config.datacenter ? { datacenter: this.config.datacenter } : {}) };
  }

  members(): Member[] {
    return this.session.ring.members();
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
    // Before the store opens, which clears tmp/: a second worker on this directory (a unit started
    // twice, a second `fanout serve` over one --data-dir) cleared the first one's fills in flight
    // even when it then failed to listen, and running beside it, each evicted and rewrote
    // policy.json unseen by the other.
    this.unlockDataDir = await lockDir(this.config.dataDir, WORKER_DATA_DIR).catch((err: unknown) => {
      // A full disk serves uncached (disk.test.ts): no room for the lock does not stop a start.
      if (!isDiskFull(err)) throw err;
      this.logger.warn({ err }, 'the disk is full: the data directory is not locked against a second worker');
      return undefined;
    });
    try {
      await this.startHoldingDataDir();
    } catch (err) {
      await this.releaseDataDir();
      throw err;
    }
  }

  private async startHoldingDataDir(): Promise<void> {
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
    this.loopbackOnly = listensOnLoopbackOnly(this.server);
    await this.certificates?.start();
    await this.membership.start();
    this.onMembershipChange(this.membership.members());
    await this.checkRemoteSources();
    this.sourceBudget.start(this.stopping.signal);
    await this.gateway?.start();
    this.logger.info({ url: this.boundUrl, mounts: this.config.mounts }, 'worker started');
    const fds = fdLimitShortfall(openFileLimit(), this.gateway ? 2 : 1, this.config.limits.maxConnections);
    if (fds) {
      this.logger.warn(
        fds,
        `open-file limit (ulimit -n, LimitNOFILE) is ${fds.limit}, below the ${fds.wanted} this worker's limits.maxConnections (${this.config.limits.maxConnections} a port) and page files want: connections past the free descriptors are closed unanswered, and reads that find none fail with OVERLOADED. Raise the limit, or lower limits.maxConnections`,
      );
    }
    // In a container the page budgets take at most an eighth of its limit each (lib/memory/container.ts).
    const cut = containerCutNote('limits.responseMemory', this.config.limits.responseMemory);
    if (cut) this.logger.info(cut);
    if (!this.gate.tokens.hasAdmin) this.logger.warn('no admin token configured (auth.tokens or FANOUT_TOKEN): every admin call will be refused');
  }

  /**
   * A fanout:// source that is this cluster (or reads it down a chain), lacks its mount or has
   * another page size is refused: the worker does not start. One that does not answer yet only
   * warns: cached pages serve, uncached reads fail SOURCE_ERROR, and the loop check runs again
   * on every read once the remote answers.
   */
  private async checkRemoteSources(): Promise<void> {
    for (const [name, ufs] of this.mounts) {
      if (!(ufs instanceof FanoutUfs)) continue;
      try {
        await ufs.checkRemote();
      } catch (err) {
        if (err instanceof FanoutError && err.code === 'INVALID_CONFIG') {
          await this.stop().catch(() => {});
          throw err;
        }
        this.logger.warn({ mount: name, source: ufs.uri, err: (err as Error).message }, 'remote cluster of a fanout:// source not reachable at start; checked again on reads');
      }
    }
  }

  /** Clusters this one reads through its fanout:// sources (for /v1/cluster: the loop check of readers of this one). */
  upstream(): string[] {
    const chains = [...this.mounts.values()].map((ufs) => (ufs instanceof FanoutUfs ? ufs.upstream() : []));
    return [...new Set(chains.flat())];
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
    if (opts.drainMs) await this.guard.drain(opts.drainMs);
    this.stopping.abort(new FanoutError('ABORTED', 'worker stopping'));
    await this.gateway?.stop();
    await this.certificates?.stop();
    this.admin.stop();
    await this.dashboard.stop();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    await this.session.close();
    await this.lineClient.close();
    await Promise.all([...this.mounts.values()].map((u) => u.close?.()));
    // Every connection is closed: no send uses a kept page file any more.
    this.store.closeSendFiles();
    // The last reads, so a restart evicts by them (readmarks.ts).
    await this.store.flushReadMarks().catch((err: unknown) => this.logger.warn({ err }, 'page read times could not be recorded'));
    await this.releaseDataDir();
  }

  private async releaseDataDir(): Promise<void> {
    const unlock = this.unlockDataDir;
    this.unlockDataDir = undefined;
    await unlock?.().catch((err: unknown) => this.logger.warn({ err }, 'the data directory lock could not be removed'));
  }

  async status(): Promise<WorkerStatus> {
    const m = this.metrics;
    return {
      id: this.config.id,
      url: this.config.advertiseUrl,
      datacenter: this.config.datacenter,
      capacity: this.store.capacity,
      configuredCapacity: this.store.configuredCapacity,
      used: this.store.used,
      pageBytes: this.store.pageBytes,
      pages: this.store.pageCount,
      hits: await m.value(m.hits),
      misses: await m.value(m.misses),
      bytesServed: await m.value(m.bytesServed),
      bytesFromSource: await m.value(m.bytesFromSource),
      evictions: await m.value(m.evictions),
      inflightSourceReads: this.pages.flights.inflight,
      sourceRates: this.sourceBudget.rates(),
      lines: this.sourceBudget.lines(),
      sendPath: sendPath(),
      checksumPath: checksumPath(),
      memoryPath: memoryPath(),
      // Kernel sends at once (with sendPath 'js' sends run on the JS thread and this does not apply).
      threads: this.config.threads,
      membership: this.membership.status(),
    };
  }

  private onMembershipChange(members: Member[]): void {
    this.session.setMembers(members.length > 0 ? members : [this.self]);
    this.logger.info({ members: members.map((m) => m.id) }, 'membership changed');
    if (members.length > 1 && !this.gate.peer && !this.warnedNoSecret) {
      this.warnedNoSecret = true;
      this.logger.warn('no cluster secret (auth.clusterSecret or FANOUT_CLUSTER_SECRET): peers cannot ask each other for direct reads, so the loop guard of page forwarding is off');
    }
  }
}
