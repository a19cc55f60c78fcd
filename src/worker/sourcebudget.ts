import { randomUUID } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import type { Member } from '../core/types.js';
import { TokenBucket } from '../lib/ratelimit/index.js';
import { LineCoordinator, LineLease, DEFAULT_LEASE_MS, DEFAULT_RENEW_MS, type CappedGrant, type LeaseGrant, type LeaseRequest, type LineState, type TrafficClass } from '../lib/lines/index.js';

/** A line as configured: its cluster-wide rate and what preloads are guaranteed of it (bytes/s). */
export interface LineSpec {
  rate: number;
  preloadFloor: number;
}

export interface SourceBudgetOptions {
  /** Named lines, and the implicit line of every mount with a `sourceRate` of its own. */
  lines: Record<string, LineSpec>;
  /** The line each budgeted mount crosses (mounts without one are not limited by a line). */
  mountLines: Record<string, string>;
  /** Cap on bytes/s this worker reads from all sources together; 0 = unlimited. */
  workerRate: number;
  clock: Clock;
  /** This worker's member id. */
  self: string;
  /** The member that coordinates `line` (the ring owner of its name). */
  coordinatorOf: (line: string) => Member | undefined;
  /** Member ids of the cluster now. */
  members: () => string[];
  /**
   * False while another running worker holds this worker's id (membership `id-taken`): the ring's
   * member of that id is the other worker, the one that coordinates that id's lines and is
   * counted in every line. This one then coordinates nothing and applies no share (LineLease's
   * inRing). Before, it took itself for the coordinator and granted itself a line's whole rate
   * while the other granted it again: measured 4.25 MB/s across a line of 2 MB/s. Absent: always true.
   */
  holdsOwnId?: () => boolean;
  /** Sends a renewal to a remote coordinator (an authenticated peer call with a deadline). */
  askPeer: (coordinator: Member, line: string, req: LeaseRequest, signal: AbortSignal) => Promise<LeaseGrant | undefined>;
  /** Told of every grant of bytes across a line (metrics). */
  onUse?: (line: string, cls: TrafficClass, bytes: number) => void;
  /** Told of every lease grant past this worker's own line rate or lease length, applied capped (lib/lines boundGrant). */
  onGrantCapped?: (line: string, capped: CappedGrant) => void;
  /**
   * As this worker coordinates `line`: the rate it now holds the cluster to changed, because
   * members are configured with another rate than its own (`differing`: id → their rate).
   */
  onLineRate?: (line: string, rate: number, own: number, differing: Map<string, number>) => void;
  renewMs?: number;
  leaseMs?: number;
}

/** The implicit line of a mount with its own `sourceRate` (":" never appears in a line name). */
export function mountLineName(mount: string): string {
  return `mount:${mount}`;
}

/**
 * What this worker may read from its sources: each line's cluster-wide rate, of which a
 * coordinator (the ring owner of the line's name) leases shares to the members by demand
 * (lib/lines), and an optional cap for this worker across all mounts. This worker coordinates
 * the lines it owns and renews its own share of every line it crosses.
 */
export class SourceBudget {
  private readonly leases = new Map<string, LineLease>();
  private readonly coordinators = new Map<string, { coordinator: LineCoordinator; self: Member; lineRate: number }>();
  private readonly workerBucket: TokenBucket;
  private readonly epoch = randomUUID();

  constructor(private readonly opts: SourceBudgetOptions) {
    for (const [line, spec] of Object.entries(opts.lines)) {
      this.leases.set(
        line,
        new LineLease({
          line,
          ...spec,
          member: opts.self,
          epoch: this.epoch,
          clock: opts.clock,
          renewMs: opts.renewMs,
          leaseMs: opts.leaseMs,
          members: () => opts.members().length,
          inRing: () => this.holdsOwnId(),
          ask: (req, signal) => this.ask(line, req, signal),
          onCapped: (capped) => opts.onGrantCapped?.(line, capped),
        }),
      );
    }
    this.workerBucket = new TokenBucket({ rate: opts.workerRate, clock: opts.clock });
  }

  /** Renews every line's share until `signal` aborts. */
  start(signal: AbortSignal): void {
    for (const lease of this.leases.values()) void lease.run(signal);
  }

  /** Waits until `bytes` more of class `cls` may be read from `mount`'s source. */
  async take(mount: string, bytes: number, signal?: AbortSignal, cls: TrafficClass = 'read'): Promise<void> {
    const line = this.opts.mountLines[mount];
    const lease = line === undefined ? undefined : this.leases.get(line);
    if (lease) {
      await lease.take(bytes, cls, signal);
      this.opts.onUse?.(line!, cls, bytes);
    }
    await this.workerBucket.take(bytes, signal);
  }

  /** Answers a member's renewal of `line` (this worker must be its coordinator). */
  renew(line: string, req: LeaseRequest): LeaseGrant | undefined {
    const spec = this.opts.lines[line];
    if (!spec) throw new FanoutError('NOT_FOUND', `no line named "${line}" on this worker`);
    if (!this.holdsOwnId()) {
      this.coordinators.clear();
      throw new FanoutError('WORKER_UNAVAILABLE', `${this.opts.self} coordinates no line: another running worker holds its id, and is the ring's member of it`);
    }
    const owner = this.opts.coordinatorOf(line);
    if (owner?.id !== this.opts.self) {
      // Two coordinators could grant the same rate twice: the asker keeps its share until it lapses.
      this.coordinators.delete(line);
      throw new FanoutError('WORKER_UNAVAILABLE', `${this.opts.self} does not coordinate line "${line}" (its ring says ${owner?.id ?? 'nobody'})`);
    }
    let entry = this.coordinators.get(line);
    if (!entry) {
      const coordinator = new LineCoordinator({ ...spec, leaseMs: this.opts.leaseMs ?? DEFAULT_LEASE_MS, silentMs: 3 * (this.opts.renewMs ?? DEFAULT_RENEW_MS), clock: this.opts.clock });
      entry = { coordinator, self: owner, lineRate: spec.rate };
      this.coordinators.set(line, entry);
    }
    const grant = entry.coordinator.renew(req, this.opts.members());
    const lineRate = entry.coordinator.lineRate();
    if (lineRate !== entry.lineRate) {
      entry.lineRate = lineRate;
      this.opts.onLineRate?.(line, lineRate, spec.rate, entry.coordinator.differing());
    }
    return grant;
  }

  /** Each line: its rate, this worker's share, what crossed it and what waits (status, metrics). */
  lines(): (LineState & { coordinator: string | undefined; mounts: string[] })[] {
    return [...this.leases.values()].map((lease) => {
      const state = lease.state();
      const mounts = Object.entries(this.opts.mountLines).filter(([, l]) => l === state.line).map(([m]) => m);
      return { ...state, coordinator: this.opts.coordinatorOf(state.line)?.id, mounts };
    });
  }

  /**
   * This worker's current share per budgeted mount (bytes/s), for status and metrics. 0 keeps its
   * old meaning (unlimited), so a limited mount whose share is nothing at the moment shows 1.
   */
  rates(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [mount, line] of Object.entries(this.opts.mountLines)) out[mount] = Math.max(1, Math.floor(this.leases.get(line)?.state().share ?? 0));
    return out;
  }

  /** The rate of the line `mount` crosses, for the whole cluster (0 = none). */
  lineRate(mount: string): number {
    const line = this.opts.mountLines[mount];
    return line === undefined ? 0 : (this.opts.lines[line]?.rate ?? 0);
  }

  get workerRate(): number {
    return this.workerBucket.rate;
  }

  private holdsOwnId(): boolean {
    return this.opts.holdsOwnId?.() !== false;
  }

  private ask(line: string, req: LeaseRequest, signal: AbortSignal): Promise<LeaseGrant | undefined> {
    const coordinator = this.opts.coordinatorOf(line);
    if (!coordinator) return Promise.resolve(undefined);
    if (coordinator.id === this.opts.self) return Promise.resolve(this.renew(line, req));
    this.coordinators.delete(line); // not ours any more: a later takeover starts afresh
    return this.opts.askPeer(coordinator, line, req, signal);
  }
}
