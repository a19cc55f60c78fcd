import type { IncomingMessage, ServerResponse } from 'node:http';
import { FanoutError } from '../core/errors.js';
import { parseFanoutPath, type FanoutPath } from '../core/paths.js';
import type { DirEntry, MembershipState, MembershipStatus, PageRef, WorkerStatus } from '../core/types.js';
import { serveBatch, type BatchRelay } from './batchpages.js';
import type { ClusterSession } from '../client/session.js';
import type { Access, AccessGate } from '../lib/auth/index.js';
import { refuseOwnSourceReads } from './clusterid.js';
import { DIRECT_HEADER, type ClusterReader } from '../lib/cluster/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { Ufs } from '../lib/ufs/index.js';
import { HEADERS, PAGE_QUERY, ROUTES, type ClusterInfoBody } from '../lib/wire/index.js';
import { isPreload, parseRenewQuery } from './lineclient.js';
import type { LeaseGrant, LeaseRequest, TrafficClass } from '../lib/lines/index.js';
import { checkPageSize, intParam, parseRange, routePath, sendError, sendJson } from './http.js';
import { sendRange } from './rangesend.js';
import { localSpansFor } from './localspans.js';
import { REPORT_PREFIX } from './reports.js';
import { contentHashParam, PublishedPages } from './content.js';
import { monotonicClock } from '../core/clock.js';
import { bodyStillComing } from '../lib/http/index.js';
import { pageSpan } from '../core/pages.js';
import { pageKey } from '../lib/pagekey/index.js';
import { withCookieToken, type Dashboard } from './dashboard/index.js';
import type { FileInfoService } from './fileinfo.js';
import type { LocalSpanDeps } from './localspans.js';
import type { PageService } from './pageservice.js';
import type { Admin } from './admin.js';
import type { PageReports } from './reports.js';
import { notReadyReason } from './readiness.js';

/** What the HTTP API uses of its worker: the parts it routes to, nothing else. */
export interface RoutesDeps {
  config: { id: string; pageSize: number; replication: number; statTtl: number };
  gate: Pick<AccessGate, 'check'>;
  files: FileInfoService;
  ufs(mount: string): Ufs;
  mountNames(): string[];
  members(): ClusterInfoBody['members'];
  /** The member list may be out of date (etcd unreachable). */
  membersStale(): boolean;
  /** Where this worker stands in the membership (readiness). */
  membership(): MembershipStatus;
  /** The state alone (every client's member refresh carries it): no sorted list of ignored records. */
  membershipState(): MembershipState;
  status(): Promise<WorkerStatus>;
  metrics: Pick<WorkerMetrics, 'registry'>;
  pages: Pick<PageService, 'serve' | 'responseSlots' | 'batchSlots' | 'flow' | 'wholePage' | 'checksOnFill' | 'readStored'>;
  reader: ClusterReader;
  localSpans: LocalSpanDeps;
  /** Gives a page chunk sent by /v1/data back to the fetcher's memory. */
  release(chunk: Buffer): void;
  admin: Pick<Admin, 'dispatch'>;
  reports: Pick<PageReports, 'handle'>;
  dashboard: Pick<Dashboard, 'ui' | 'handles' | 'dispatch'>;
  /** Same on every worker of the cluster: a fanout:// source chain recognises a loop by it. */
  clusterId: string;
  /** Clusters this one reads through its fanout:// sources. */
  upstream(): string[];
  /** The bytes of a page stored here under its exact key (served without asking the source); undefined if none. */
  storedSize(key: string): number | undefined;
  /** A member renews its share of a line this worker coordinates (SourceBudget.renew). */
  renewLine(line: string, req: LeaseRequest): LeaseGrant | undefined;
  /** The worker's cluster session: batch items owned elsewhere are relayed to their owner in one batch. */
  session?: Pick<ClusterSession, 'batchReader' | 'ring'>;
}

const MAX_URL_LENGTH = 8192;
/** Pages a /v1/data (or S3 GetObject) response fetches ahead while its client keeps up (the SDK's window). */
export const DATA_WINDOW = 8;

/**
 * The worker's HTTP API:
 *   GET  /healthz                      liveness
 *   GET  /readyz                       readiness: 503 while in no ring (readiness.ts)
 *   GET  /metrics                      Prometheus
 *   GET  /v1/cluster                   members, page size, mounts (what clients need to place pages)
 *   GET  /v1/status                    this worker's counters
 *   GET  /v1/stat/MOUNT/PATH           file info (version, size, mtime)
 *   GET  /v1/list/MOUNT/DIR            one directory level; /v1/list/ lists mounts
 *   GET  /v1/page/MOUNT/PATH?v&size&i  one page of one version (checksum in header or trailer)
 *   GET|HEAD /v1/data/MOUNT/PATH       bytes via the cluster, with Range
 *   POST /v1/report/MOUNT/PATH?v&size&i a reader's page failed its checksum: re-verify it (reports.ts)
 *   GET  /v1/lines/renew?line&…        a member renews its share of a line this worker coordinates (peers only)
 *   /v1/admin/*                        see Admin
 *   /ui, /v1/status/*, /v1/members/*, /v1/releases   the dashboard, see Dashboard
 * /healthz and /readyz are open; /v1/admin/* needs an admin token; the rest needs a read token when
 * auth.readToken is set. Peer-only headers (x-fanout-direct) need the peer credential.
 */
export class Routes {
  private readonly published = new PublishedPages((mount) => this.worker.ufs(mount), monotonicClock);

  constructor(private readonly worker: RoutesDeps) {}

  async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    if (url.length > MAX_URL_LENGTH) throw new FanoutError('REQUEST_TOO_LARGE', `request URL longer than ${MAX_URL_LENGTH} bytes`);
    const route = url.split('?')[0]!;
    const admin = url.startsWith(`${ROUTES.admin}/`);
    // Only the admin POSTs, /v1/pages and /ui/login read a body. Any other route's (a GET with
    // one, a report) would be read and dropped by node after the answer, for as long as the
    // client sends it: such an answer closes the connection (refusals: RequestGuard).
    // Rare, so the body is checked first and the route only then.
    if (bodyStillComing(req) && !((admin && route !== ROUTES.adminPolicy) || route === ROUTES.pages || route === '/ui/login')) res.shouldKeepAlive = false;
    // The page and its files check access themselves: a browser without a token gets a login form.
    if (route === '/ui' || route.startsWith('/ui/')) return this.worker.dashboard.ui.serve(req, res, route);
    this.authorize(req, res, route === ROUTES.health || route === ROUTES.ready ? 'open' : admin ? 'admin' : 'read');
    if (admin) return this.worker.admin.dispatch(req, res);
    if (url.startsWith(`${REPORT_PREFIX}/`)) return this.worker.reports.handle(req, res);
    if (route === ROUTES.linesRenew) return this.renewLine(req, res);
    if (route === ROUTES.pages) return this.batch(req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      throw new FanoutError('INVALID_ARGUMENT', `method ${req.method} is not supported; fanout is read-only`);
    }
    if (route === ROUTES.health) return sendJson(res, 200, { ok: true, id: this.worker.config.id });
    if (route === ROUTES.ready) return this.ready(res);
    if (route === ROUTES.metrics) return this.metrics(res);
    if (route === ROUTES.cluster) return this.cluster(res);
    refuseOwnSourceReads(req, this.worker.clusterId);
    if (route === ROUTES.status) return sendJson(res, 200, await this.worker.status());
    if (url.startsWith(`${ROUTES.page}/`)) return this.page(req, res);
    if (url.startsWith(`${ROUTES.stat}/`)) return sendJson(res, 200, await this.worker.files.stat(routePath(req, ROUTES.stat).target));
    if (url.startsWith(`${ROUTES.list}/`) || route === ROUTES.list) return this.list(req, res);
    if (url.startsWith(`${ROUTES.data}/`)) return this.data(req, res);
    if (this.worker.dashboard.handles(route)) return this.worker.dashboard.dispatch(req, res, route);
    throw new FanoutError('NOT_FOUND', `no such endpoint: ${route.slice(0, 200)}`);
  }

  /** Refuses a request its credentials do not allow (before any body is read or any work done). */
  private authorize(req: IncomingMessage, res: ServerResponse, need: Access): void {
    try {
      // Reads also accept the dashboard's session cookie, from the dashboard's own origin only (its
      // page makes these calls; pages of other origins of the same site get the cookie sent too);
      // admin calls never do (cross-site requests carry cookies).
      this.worker.gate.check(need === 'read' ? withCookieToken(req.headers, { ownOrigin: true }) : req.headers, need, req.socket);
    } catch (err) {
      if (err instanceof FanoutError && err.code === 'UNAUTHENTICATED') res.setHeader('www-authenticate', 'Bearer realm="fanout"');
      throw err;
    }
  }

  /** A member renews its share of a line this worker coordinates (peers only: shares are the cluster's). */
  private renewLine(req: IncomingMessage, res: ServerResponse): void {
    if (!this.worker.gate.check(req.headers, 'read').peer) throw new FanoutError('FORBIDDEN', 'line renewals are only for workers of this cluster (auth.clusterSecret)');
    const { line, req: renewal } = parseRenewQuery(req.url ?? '');
    sendJson(res, 200, { grant: this.worker.renewLine(line, renewal) ?? null });
  }

  /**
   * 200 while the worker is in the ring; 503 WORKER_UNAVAILABLE saying why not (readiness.ts).
   * Answered here, not thrown: a probe every few seconds would log a line each time, and the
   * membership already logged the cause once.
   */
  private ready(res: ServerResponse): void {
    const { id } = this.worker.config;
    const membership = this.worker.membership();
    const reason = notReadyReason(id, membership);
    if (reason) return void sendError(res, new FanoutError('WORKER_UNAVAILABLE', reason));
    sendJson(res, 200, { ok: true, id, membership: membership.state });
  }

  private async metrics(res: ServerResponse): Promise<void> {
    const { registry } = this.worker.metrics;
    const text = await registry.metrics();
    res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private cluster(res: ServerResponse): void {
    const body: ClusterInfoBody = {
      self: this.worker.config.id,
      pageSize: this.worker.config.pageSize,
      replication: this.worker.config.replication,
      statTtlMs: this.worker.config.statTtl,
      members: this.worker.members(),
      stale: this.worker.membersStale(),
      mounts: this.worker.mountNames(),
      clusterId: this.worker.clusterId,
      upstream: this.worker.upstream(),
      membership: this.worker.membershipState(),
    };
    sendJson(res, 200, body);
  }

  private async page(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { target, query } = routePath(req, ROUTES.page);
    if (!target.path) throw new FanoutError('IS_A_DIRECTORY', 'a page belongs to a file');
    this.worker.ufs(target.mount); // UNKNOWN_MOUNT before anything else
    const version = query.get(PAGE_QUERY.version);
    if (!version || version.length > 1024) throw new FanoutError('INVALID_ARGUMENT', 'query parameter "v" (file version) is required');
    const size = intParam(query, PAGE_QUERY.size);
    const index = intParam(query, PAGE_QUERY.index);
    const hash = contentHashParam(query);
    if (query.has(PAGE_QUERY.pageSize)) checkPageSize(intParam(query, PAGE_QUERY.pageSize), this.worker.config.pageSize);
    const ref = { mount: target.mount, path: target.path, version, size, index, hash };
    await this.checkPage(ref);
    const direct = req.headers[DIRECT_HEADER] !== undefined;
    await this.worker.pages.serve(res, ref, direct, isPreload(req, HEADERS.trafficClass) ? 'preload' : 'read');
  }

  /** The checks of a page request, for /v1/page and each item of a batch. */
  private async checkPage(ref: PageRef): Promise<void> {
    // A page stored under its exact key (version and size are in it) is served without asking
    // the source: no source read or pollution to guard against, and a cluster whose source (a
    // remote cluster, a line) is down keeps serving what it holds.
    // A small page of a source that checks version and size on the open file as it fills (a
    // directory with the small-file addon) needs no stat first: the fill refuses the same requests.
    const stored = this.worker.storedSize(pageKey(ref, this.worker.config.pageSize));
    // A path key names the size; a content key (the page's SHA-256) does not, so the stored page
    // must be the span the request names, or a batch would frame bytes its reader never asked for.
    if (stored !== undefined && ref.hash !== undefined) checkStoredSpan(ref, stored, this.worker.config.pageSize);
    if (stored === undefined && !this.worker.pages.checksOnFill(ref)) await this.checkPageRequest({ mount: ref.mount, path: ref.path }, ref.version, ref.size, ref.index);
    await this.published.check(ref);
  }

  /** POST /v1/pages: many whole small pages in one framed answer (batchpages.ts). */
  private async batch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      throw new FanoutError('INVALID_ARGUMENT', `${ROUTES.pages} takes POST with a JSON list of pages`);
    }
    refuseOwnSourceReads(req, this.worker.clusterId);
    const pages = this.worker.pages;
    const direct = req.headers[DIRECT_HEADER] !== undefined;
    const cls = isPreload(req, HEADERS.trafficClass) ? 'preload' : 'read';
    const deps = {
      pageSize: this.worker.config.pageSize,
      check: async (ref: PageRef) => {
        // Paths in a JSON body are checked as a URL's are: nothing may escape its mount.
        const target = parseFanoutPath(`/${ref.mount}/${ref.path}`);
        if (target.mount !== ref.mount || target.path !== ref.path) throw new FanoutError('INVALID_PATH', `not a canonical path: /${ref.mount}/${ref.path}`.slice(0, 300));
        if (!ref.path) throw new FanoutError('IS_A_DIRECTORY', 'a page belongs to a file');
        this.worker.ufs(ref.mount); // UNKNOWN_MOUNT
        await this.checkPage(ref);
      },
      wholePage: pages.wholePage.bind(pages),
      readStored: pages.readStored.bind(pages),
      responseSlots: pages.responseSlots,
      batchSlots: pages.batchSlots,
      flow: (r: ServerResponse) => pages.flow(r),
      relay: this.batchRelay(cls),
    };
    await serveBatch(deps, req, res, direct, cls);
  }

  /**
   * Items of a batch that another worker owns (and this one does not hold) go to their owner in
   * one batch per owner, marked direct so the owner reads its source rather than relaying again
   * (two workers with different rings never bounce a batch). A page the relay does not bring is
   * filled here as /v1/page would (from the owner, or the source if the owner is down).
   */
  private batchRelay(cls: TrafficClass): BatchRelay | undefined {
    const session = this.worker.session;
    if (!session) return undefined;
    const { pageSize, replication, id } = this.worker.config;
    const pages = this.worker.pages;
    const relays = session.batchReader(
      {
        fetchPage: async (ref, signal) => {
          const page = await pages.wholePage(ref, false, cls, signal ?? new AbortController().signal);
          try {
            return [Buffer.from(page.data)];
          } finally {
            page.release();
          }
        },
      },
      { pageSize, preload: cls === 'preload', direct: true },
    );
    // Without the cluster secret a relayed batch cannot say "direct": two workers whose rings
    // differ could hand it back and forth, so such a worker fills each item itself.
    if (!relays.direct) return undefined;
    return {
      owns: (ref) => {
        const key = pageKey(ref, pageSize);
        return this.worker.storedSize(key) !== undefined || session.ring.owners(key, Math.max(1, replication)).some((m) => m.id === id);
      },
      fetch: (ref, signal) => relays.fetchPage(ref, signal),
    };
  }

  /**
   * A page request names a version and a size: both must be the file's as this worker sees it,
   * or a client could make the worker read the source and store a page under any key it likes
   * (cache pollution, source amplification). Refused before any source read.
   */
  private async checkPageRequest(target: FanoutPath, version: string, size: number, index: number): Promise<void> {
    pageSpan(index, size, this.worker.config.pageSize); // RANGE_NOT_SATISFIABLE for a page past the end
    let info = await this.worker.files.stat(target);
    if (info.version !== version) info = await this.worker.files.freshStat(target);
    if (info.version !== version) throw new FanoutError('SOURCE_CHANGED', `/${target.mount}/${target.path} is at another version than the one asked for`);
    if (info.size !== size) throw new FanoutError('INVALID_ARGUMENT', `size=${size} is not the size of /${target.mount}/${target.path} at this version`);
  }

  private async list(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '';
    const { target } = url.startsWith('/v1/list/') ? routePath(req, '/v1/list') : { target: { mount: '', path: '' } };
    if (!target.mount) {
      const entries: DirEntry[] = this.worker.mountNames().map((name) => ({ name, type: 'dir' }));
      return sendJson(res, 200, { path: '/', entries });
    }
    // The client that leaves takes its place in the listing with it: the last one stops it.
    const gone = new AbortController();
    res.once('close', () => res.writableFinished || gone.abort(new FanoutError('ABORTED', 'client went away')));
    const entries = await this.worker.files.listDir(target, gone.signal);
    sendJson(res, 200, { path: `/${target.mount}/${target.path}`, entries });
  }

  private async data(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { target } = routePath(req, '/v1/data');
    const info = await this.worker.files.stat(target);
    // Several ranges get the whole file with 200, as from the S3 gateway (and S3): RFC 9110 lets a
    // server ignore Range, and a multipart/byteranges body is something no fanout client reads.
    const header = req.headers.range;
    const range = header !== undefined && header.includes(',') ? undefined : parseRange(header, info.size);
    const start = range?.start ?? 0;
    const end = range?.end ?? info.size;
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      'content-length': end - start,
      'accept-ranges': 'bytes',
      etag: JSON.stringify(info.version),
      'last-modified': new Date(info.mtimeMs).toUTCString(),
    };
    if (range) headers['content-range'] = `bytes ${start}-${end - 1}/${info.size}`;
    if (req.method === 'HEAD' || start === end) {
      res.writeHead(range ? 206 : 200, headers);
      res.end();
      return;
    }
    const abort = new AbortController();
    res.once('close', () => abort.abort(new FanoutError('ABORTED', 'client went away')));
    const pages = this.worker.pages;
    const local = localSpansFor(res, this.worker.localSpans, abort.signal);
    const options = { reader: this.worker.reader, slots: pages.responseSlots, flow: pages.flow(res), pageSize: this.worker.config.pageSize, window: DATA_WINDOW, signal: abort.signal, release: (chunk: Buffer) => this.worker.release(chunk), local };
    await sendRange(res, options, target.mount, info, start, end, () => res.writeHead(range ? 206 : 200, headers));
  }
}

/** A stored content page's bytes against the span the request's size and index name. */
function checkStoredSpan(ref: PageRef, stored: number, pageSize: number): void {
  const { start, end } = pageSpan(ref.index, ref.size, pageSize);
  if (end - start !== stored) {
    throw new FanoutError('INVALID_ARGUMENT', `size=${ref.size} names ${end - start} bytes for page ${ref.index}, but the page of that hash has ${stored}`);
  }
}
