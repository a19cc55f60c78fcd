import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';
import type { Member, WorkerStatus } from '../../core/types.js';
import type { AccessGate } from '../../lib/auth/index.js';
import type { EtcdConnection } from '../../lib/membership/index.js';
import type { PageFill } from '../../lib/transfer/index.js';
import type { LoadProgress } from '../admin.js';
import { sendJson } from '../http.js';
import { describeActivity, type Activity } from './activity.js';
import { StatusHistory, type CounterReadings, type HistorySample } from './history.js';
import { ReleaseView } from './releases.js';
import { MemberRelay } from './relay.js';
import { UiPages } from './ui.js';

export { withCookieToken } from './session.js';
export type { HistorySample } from './history.js';

/** What a worker lends its dashboard: read-only views of its state. */
export interface DashboardDeps {
  clock: Clock;
  selfId: string;
  members(): Member[];
  status(): Promise<WorkerStatus>;
  counters(): Promise<CounterReadings>;
  budgets(): Record<string, number>;
  used(): number;
  fills(): PageFill[];
  loads(): LoadProgress[];
  gate: AccessGate;
  /** https API: the session cookie is Secure. */
  secure: boolean;
  /** The etcd the release index lives in (the membership's), if any. */
  etcd?: EtcdConnection;
  /** The cluster CA, for members over https. */
  ca?: Buffer;
  /** A token given to the sign-in form or a `/ui?token=` link was refused. */
  onRefusedToken?: () => void;
}

/** One member's share of the dashboard, in one round trip. */
export interface MemberDashboard {
  status: WorkerStatus;
  activity: Activity;
  history: { intervalMs: number; samples: HistorySample[] };
}

/** What the relay answers for a member: always 200, so a down member is data, not a failed request. */
export type RelayedMember = ({ reachable: true } & MemberDashboard) | { reachable: false; error: { code: string; message: string } };

const MEMBER_ROUTE = /^\/v1\/members\/([^/]{1,256})\/dashboard$/;

/**
 * The live dashboard of a worker: the page (/ui), the worker's own recent history, and the
 * calls the page makes:
 *   GET /v1/status/history?since=T      this worker's samples after T (ms) of the last 15 minutes
 *   GET /v1/status/dashboard?since=T    status, fills and loads in flight, and those samples
 *   GET /v1/members/ID/dashboard?since=T  the same of member ID, relayed (deadline per member)
 *   GET /v1/releases[?hosts=NAME]       releases, channels, rollout summary (full host list of NAME)
 */
export class Dashboard {
  readonly ui: UiPages;
  readonly history: StatusHistory;
  private readonly releases: ReleaseView;
  private readonly relay: MemberRelay;
  private readonly stopping = new AbortController();

  constructor(private readonly deps: DashboardDeps) {
    this.ui = new UiPages(deps.gate, deps.secure, deps.onRefusedToken);
    this.history = new StatusHistory(
      { counters: () => deps.counters(), fills: () => deps.fills().length, used: () => deps.used(), budgets: () => deps.budgets() },
      { clock: deps.clock },
    );
    this.releases = new ReleaseView(deps.etcd, deps.clock);
    this.relay = new MemberRelay({ headers: () => deps.gate.peerHeaders(), connect: deps.ca ? { ca: deps.ca } : undefined });
  }

  start(): void {
    void this.history.run(this.stopping.signal);
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.all([this.relay.close(), this.releases.close()]);
  }

  /** Whether `route` is one of the dashboard's data calls (read access, GET). */
  handles(route: string): boolean {
    return route === '/v1/status/history' || route === '/v1/status/dashboard' || route === '/v1/releases' || route.startsWith('/v1/members/');
  }

  async dispatch(req: IncomingMessage, res: ServerResponse, route: string): Promise<void> {
    const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    const since = sinceParam(query);
    if (route === '/v1/status/history') {
      return sendJson(res, 200, { id: this.deps.selfId, intervalMs: this.history.intervalMs, samples: this.history.since(since) });
    }
    if (route === '/v1/status/dashboard') return sendJson(res, 200, await this.local(since));
    if (route === '/v1/releases') return sendJson(res, 200, await this.releases.answer(query.get('hosts') ?? undefined));
    const match = MEMBER_ROUTE.exec(route);
    if (!match) throw new FanoutError('NOT_FOUND', `no such endpoint: ${route.slice(0, 200)}`);
    return sendJson(res, 200, await this.member(decodeId(match[1]!), since));
  }

  private async local(since: number): Promise<MemberDashboard> {
    return {
      status: await this.deps.status(),
      activity: describeActivity(this.deps.fills(), this.deps.loads()),
      history: { intervalMs: this.history.intervalMs, samples: this.history.since(since) },
    };
  }

  private async member(id: string, since: number): Promise<RelayedMember> {
    if (id === this.deps.selfId) return { reachable: true, ...(await this.local(since)) };
    const member = this.deps.members().find((m) => m.id === id);
    if (!member) throw new FanoutError('NOT_FOUND', `no member "${id.slice(0, 100)}" in this worker's view of the cluster`);
    try {
      const answer = (await this.relay.getJson(member, `/v1/status/dashboard?since=${since}`)) as MemberDashboard;
      return { reachable: true, ...answer };
    } catch (err) {
      const error = err instanceof FanoutError ? err : new FanoutError('WORKER_UNAVAILABLE', (err as Error).message);
      return { reachable: false, error: error.toJSON() };
    }
  }
}

function sinceParam(query: URLSearchParams): number {
  const raw = query.get('since');
  if (raw === null || raw === '') return 0;
  if (!/^\d{1,16}$/.test(raw)) throw new FanoutError('INVALID_ARGUMENT', 'query parameter "since" must be a time in ms since the epoch');
  return Number(raw);
}

function decodeId(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new FanoutError('INVALID_ARGUMENT', 'malformed member id in the URL');
  }
}
