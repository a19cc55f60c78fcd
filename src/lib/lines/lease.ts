import type { Clock } from '../../core/clock.js';
import { ClassBucket, TRAFFIC_CLASSES, type TrafficClass } from './classbucket.js';
import type { ClassDemand } from './allocate.js';
import type { LeaseGrant, LeaseRequest } from './coordinator.js';
import type { LineStatus } from '../../core/types.js';

export interface LineLeaseOptions {
  line: string;
  /** The line's rate for the whole cluster, bytes/s. */
  rate: number;
  /** What preloads are guaranteed cluster-wide when they wait, bytes/s. */
  preloadFloor: number;
  member: string;
  /** This process's identity for the coordinators (see LeaseRequest.epoch). */
  epoch: string;
  clock: Clock;
  /** How often the share is renewed; default 250 ms. */
  renewMs?: number;
  /** How long a grant holds without renewal before this worker falls back to rate ÷ members. */
  leaseMs?: number;
  /** Members of the cluster now (for the fallback share). */
  members: () => number;
  /**
   * False while this worker is in no ring (another running worker holds its id): no coordinator
   * counts it, and the ring's member of its id is that other worker, which may be granted the
   * whole rate. Any share it applied, a grant or the fallback, would come on top of the line's
   * rate, so it applies none. Absent: always in the ring.
   */
  inRing?: () => boolean;
  /** Asks the line's coordinator; resolves undefined (or rejects) when there is no grant. Must honour `signal`. */
  ask: (req: LeaseRequest, signal: AbortSignal) => Promise<LeaseGrant | undefined>;
  /** Told of every grant past this worker's bounds, with what it applied instead (see boundGrant). */
  onCapped?: (capped: CappedGrant) => void;
}

/** A grant past this worker's own bounds for the line, and what it applied instead. */
export interface CappedGrant {
  granted: LeaseGrant;
  applied: LeaseGrant;
  /** The bounds the grant went past. */
  over: ('rate' | 'leaseMs')[];
}

/**
 * The longest lease a grant may set, in this worker's own leases. A coordinator counts a member
 * it stops hearing from as holding its last grant for two of its leases, and then as on its
 * fallback share (coordinator.ts, holds): a member that went on applying a grant for longer would
 * hold a share the coordinator has given to others meanwhile.
 */
export const MAX_LEASE_LEASES = 2;

/**
 * A grant as this worker applies it: at most the line's rate as this worker is configured (what
 * the line allows from its side, whatever a coordinator configured otherwise or a bad peer
 * says), a preload part within that, and a lease of at most MAX_LEASE_LEASES of its own.
 */
export function boundGrant(grant: LeaseGrant, own: { rate: number; leaseMs: number }): { applied: LeaseGrant; over: CappedGrant['over'] } {
  const over: CappedGrant['over'] = [];
  const rate = Math.min(grant.rate, own.rate);
  if (rate < grant.rate) over.push('rate');
  const leaseMs = Math.min(grant.leaseMs, MAX_LEASE_LEASES * own.leaseMs);
  if (leaseMs < grant.leaseMs) over.push('leaseMs');
  return { applied: { rate, preloadMin: Math.min(grant.preloadMin, rate), leaseMs }, over };
}

export const DEFAULT_RENEW_MS = 250;
export const DEFAULT_LEASE_MS = 1000;
/** How much above its recent use a worker asks for when nothing waits: room to grow between renewals. */
const HEADROOM = 1.5;

/** What a worker's side of one line knows of it (the status's view without coordinator and mounts). */
export type LineState = Omit<LineStatus, 'coordinator' | 'mounts'>;

/**
 * This worker's side of one line: a two-class bucket at the share its coordinator granted,
 * renewed every `renewMs` with the demand seen since the last renewal. A grant lapses after
 * `leaseMs` without renewal and the worker falls back to the safe static share (rate ÷ members),
 * which the coordinator reserves for any member it does not hear from.
 */
export class LineLease {
  readonly bucket: ClassBucket;
  private readonly renewMs: number;
  private readonly leaseMs: number;
  private seq = 0;
  private mode: LineState['mode'] = 'starting';
  private lapse: AbortController | undefined;
  /** The line's rate for the cluster as its coordinator last said (LeaseGrant.lineRate), within this worker's own. */
  private lineRate: number | undefined;
  private readonly used: Record<TrafficClass, number> = { read: 0, preload: 0 };
  private readonly sinceRenewal: Record<TrafficClass, number> = { read: 0, preload: 0 };
  private readonly queued: Record<TrafficClass, boolean> = { read: false, preload: false };
  private lastRenewal: number;

  constructor(private readonly opts: LineLeaseOptions) {
    this.bucket = new ClassBucket(opts.clock);
    this.renewMs = opts.renewMs ?? DEFAULT_RENEW_MS;
    this.leaseMs = opts.leaseMs ?? DEFAULT_LEASE_MS;
    this.lastRenewal = opts.clock.now();
  }

  /** Waits until `n` more bytes of class `cls` may cross the line. */
  async take(n: number, cls: TrafficClass, signal?: AbortSignal): Promise<void> {
    const admitted = this.bucket.take(n, cls, signal);
    if (this.bucket.waiting(cls).requests > 0) this.queued[cls] = true;
    await admitted;
    this.used[cls] += n;
    this.sinceRenewal[cls] += n;
  }

  /** Renews until `signal` aborts. Before the first grant nothing passes; a lease that lapses falls back. */
  async run(signal: AbortSignal): Promise<void> {
    // A worker that cannot reach its coordinator at all still reads, at the safe share.
    this.armLapse();
    while (!signal.aborted) {
      const started = this.opts.clock.now();
      await this.renew(signal);
      const wait = this.renewMs - (this.opts.clock.now() - started);
      await this.opts.clock.sleep(Math.max(1, wait), signal).catch(() => {});
    }
    this.lapse?.abort();
  }

  /** One renewal, bounded by twice the renewal period (well under a lease). */
  async renew(signal?: AbortSignal): Promise<void> {
    if (!this.inRing()) return this.standDown();
    if (this.mode === 'out-of-ring') {
      // Back in the ring: nothing passes until a grant, or the fallback once a lease went by without one.
      this.mode = 'starting';
      this.armLapse();
    }
    const request: LeaseRequest = { member: this.opts.member, seq: ++this.seq, epoch: this.opts.epoch, demand: this.demand(), applied: this.bucket.rate, rate: this.opts.rate };
    const deadline = new AbortController();
    const timer = this.opts.clock.sleep(2 * this.renewMs, deadline.signal).then(() => deadline.abort(), () => undefined);
    const both = signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal;
    try {
      const grant = await Promise.race([this.opts.ask(request, both), aborted(both)]);
      // An answer that came after the deadline is dropped: the coordinator already counts this
      // worker at its larger grant until the next request says what it applies.
      if (grant && !both.aborted) this.apply(grant);
    } catch {
      // No grant: keep the current one until it lapses.
    } finally {
      deadline.abort();
      void timer;
    }
  }

  state(): LineState {
    const { line, rate, preloadFloor } = this.opts;
    return {
      line,
      rate,
      preloadFloor,
      share: this.bucket.rate,
      preloadMin: this.bucket.preloadMin,
      mode: this.mode,
      used: { ...this.used },
      queue: { read: this.bucket.waiting('read'), preload: this.bucket.waiting('preload') },
    };
  }

  private apply(grant: LeaseGrant): void {
    // Out of the ring since it was asked (an answer of a coordinator that does not count it).
    if (!this.inRing()) return this.standDown();
    this.mode = 'lease';
    // Before, any grant was applied as sent: a coordinator configured with a larger rate (or a
    // bad peer) made this worker read past its own line rate, for as long a lease as it said.
    const { applied, over } = boundGrant(grant, { rate: this.opts.rate, leaseMs: this.leaseMs });
    if (over.length > 0) this.opts.onCapped?.({ granted: grant, applied, over });
    // The line's rate as the coordinator holds the cluster to it (the least of its workers'
    // configs): the fallback share is of that one, so workers falling back together stay within it.
    if (grant.lineRate !== undefined && Number.isFinite(grant.lineRate) && grant.lineRate > 0) this.lineRate = Math.min(this.opts.rate, grant.lineRate);
    this.bucket.setRate(applied.rate, applied.preloadMin);
    this.armLapse(applied.leaseMs);
  }

  private armLapse(ms = this.leaseMs): void {
    this.lapse?.abort();
    const controller = new AbortController();
    this.lapse = controller;
    this.opts.clock.sleep(ms, controller.signal).then(
      () => {
        if (this.lapse !== controller || !this.inRing()) return;
        const members = Math.max(1, this.opts.members());
        this.mode = 'fallback';
        const rate = this.lineRate ?? this.opts.rate;
        this.bucket.setRate(rate / members, Math.min(this.opts.preloadFloor, rate) / members);
      },
      () => undefined,
    );
  }

  private inRing(): boolean {
    return this.opts.inRing?.() !== false;
  }

  /** Out of the ring: no share, no fallback to come, and no coordinator asked. */
  private standDown(): void {
    this.lapse?.abort();
    this.lapse = undefined;
    this.mode = 'out-of-ring';
    this.bucket.setRate(0, 0);
  }

  /** Per class: the whole rate if requests waited since the last renewal, else recent use plus room to grow. */
  private demand(): ClassDemand {
    const now = this.opts.clock.now();
    const seconds = Math.max(0.001, (now - this.lastRenewal) / 1000);
    this.lastRenewal = now;
    const out = { read: 0, preload: 0 };
    for (const cls of TRAFFIC_CLASSES) {
      const waiting = this.queued[cls] || this.bucket.waiting(cls).requests > 0;
      out[cls] = waiting ? this.opts.rate : Math.min(this.opts.rate, (this.sinceRenewal[cls] / seconds) * HEADROOM);
      this.sinceRenewal[cls] = 0;
      this.queued[cls] = false;
    }
    return out;
  }
}

function aborted(signal: AbortSignal): Promise<undefined> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(undefined);
    signal.addEventListener('abort', () => resolve(undefined), { once: true });
  });
}
