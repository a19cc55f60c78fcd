import type { Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';

export interface LeaseScheduleOptions {
  /** Lease TTL asked for; the server's answer to each grant/renewal replaces it. */
  ttlMs: number;
  clock: Clock;
  /** Renew after this fraction of the TTL (1/3, as etcd's Go client): two more tries fit before expiry. */
  renewFraction?: number;
  /** First retry delay after a failure; doubles per consecutive failure. */
  minBackoffMs?: number;
  /**
   * Longest retry delay. Defaults to a quarter of the TTL (capped at 5 s) so that several
   * renewals are tried before a lease can expire, and an etcd that comes back is noticed soon.
   */
  maxBackoffMs?: number;
  /** Source of jitter in [0, 1); a fleet retrying after an outage should not retry in lockstep. */
  random?: () => number;
}

export type LeaseAction = 'grant' | 'renew';

export interface LeaseStep {
  action: LeaseAction;
  /** When to do it (clock time, ms). May be in the past: do it now. */
  at: number;
  why: 'first' | 'renew' | 'retry' | 'lost';
}

export type LeaseState = 'none' | 'alive' | 'lost';

/**
 * The decisions behind keeping a registration alive, without any I/O so they are tested on a
 * ManualClock: when to renew, how long to back off after failures, and when a lease must be
 * presumed gone and a new one granted.
 *
 * Expiry is estimated conservatively: a lease renewed by a request *sent* at t expires at the
 * server no earlier than t + TTL, because the server restarts the TTL when it *receives* the
 * request. Past that point the lease may already be gone (its keys deleted), so the only safe
 * move is a new lease and a new registration; an old lease that in fact survived simply
 * expires on its own, and the key has moved to the new lease by then.
 */
export class LeaseSchedule {
  private readonly clock: Clock;
  private readonly renewFraction: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly random: () => number;
  private ttlMs: number;
  private leaseState: LeaseState = 'none';
  private renewedAt = 0;
  private expiry: number | undefined;
  private failureCount = 0;
  private retryAt = 0;

  constructor(opts: LeaseScheduleOptions) {
    if (!(opts.ttlMs > 0)) throw new FanoutError('INVALID_ARGUMENT', `lease TTL must be positive, got ${opts.ttlMs}`);
    this.clock = opts.clock;
    this.ttlMs = opts.ttlMs;
    this.renewFraction = opts.renewFraction ?? 1 / 3;
    this.minBackoffMs = opts.minBackoffMs ?? 100;
    this.maxBackoffMs = Math.max(this.minBackoffMs, opts.maxBackoffMs ?? Math.min(5000, opts.ttlMs / 4));
    this.random = opts.random ?? Math.random;
    if (!(this.renewFraction > 0 && this.renewFraction < 1)) {
      throw new FanoutError('INVALID_ARGUMENT', `renewFraction must be in (0, 1), got ${this.renewFraction}`);
    }
  }

  /** 'alive' while a lease is believed valid; 'lost' once it expired or the server refused it. */
  get state(): LeaseState {
    this.checkExpiry();
    return this.leaseState;
  }

  /** Consecutive failed attempts (0 after any success): the store is unreachable while > 0. */
  get failures(): number {
    return this.failureCount;
  }

  /** Latest time the lease is known to be valid until; undefined without a live lease. */
  get expiresAt(): number | undefined {
    this.checkExpiry();
    return this.expiry;
  }

  /**
   * Moves an alive lease whose estimated expiry has passed to 'lost'. Returns true exactly
   * once per loss, so the caller can log it and report it.
   */
  checkExpiry(): boolean {
    if (this.leaseState === 'alive' && this.expiry !== undefined && this.clock.now() >= this.expiry) {
      this.leaseState = 'lost';
      this.expiry = undefined;
      return true;
    }
    return false;
  }

  /** What to do next, and when. Pure apart from noticing expiry. */
  next(): LeaseStep {
    this.checkExpiry();
    const now = this.clock.now();
    if (this.leaseState !== 'alive') {
      const why = this.leaseState === 'lost' ? 'lost' : this.failureCount > 0 ? 'retry' : 'first';
      return { action: 'grant', at: this.failureCount > 0 ? this.retryAt : now, why };
    }
    if (this.failureCount > 0) return { action: 'renew', at: this.retryAt, why: 'retry' };
    return { action: 'renew', at: this.renewedAt + this.ttlMs * this.renewFraction, why: 'renew' };
  }

  /** A grant request sent at `sentAt` succeeded with the server's TTL. */
  granted(sentAt: number, ttlMs = this.ttlMs): void {
    this.succeeded(sentAt, ttlMs);
  }

  /** A keepalive sent at `sentAt` succeeded: the server restarted the TTL. */
  renewed(sentAt: number, ttlMs = this.ttlMs): void {
    // A renewal of a lease already presumed lost does not revive it: the registration may be
    // gone, so it must be redone under a new grant.
    if (this.leaseState !== 'alive') return;
    this.succeeded(sentAt, ttlMs);
  }

  /** An attempt failed (store unreachable or erroring): retry after a growing, jittered delay. */
  failed(): void {
    this.failureCount++;
    const base = Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** Math.min(30, this.failureCount - 1));
    // "Equal jitter": between half and all of the base delay.
    this.retryAt = this.clock.now() + base * (1 - 0.5 * this.random());
  }

  /** The server answered that the lease no longer exists: grant a new one right away. */
  lost(): void {
    this.leaseState = 'lost';
    this.expiry = undefined;
    // The server answered, so it is reachable: no backoff.
    this.failureCount = 0;
  }

  /** The lease was revoked on purpose (shutdown). */
  released(): void {
    this.leaseState = 'none';
    this.expiry = undefined;
  }

  private succeeded(sentAt: number, ttlMs: number): void {
    if (ttlMs > 0) this.ttlMs = ttlMs;
    this.leaseState = 'alive';
    this.renewedAt = sentAt;
    this.expiry = sentAt + this.ttlMs;
    this.failureCount = 0;
  }
}
