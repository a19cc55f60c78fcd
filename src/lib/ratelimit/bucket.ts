import { monotonicClock, type Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';
import { admit, cancelled, refusal, waitForBytes, WakeTimer, type Waiter } from './waiters.js';

export interface TokenBucketOptions {
  /** Bytes per second; 0 means unlimited. */
  rate: number;
  /**
   * Most bytes that may pass at once after an idle period. Defaults to one second of `rate`
   * (and follows the rate when it changes, unless given explicitly).
   */
  burst?: number;
  clock?: Clock;
}

/**
 * Token bucket for bytes per second, shared by everything that reads from one source (the
 * source's egress or the inter-datacenter line is the scarce thing, not one stream).
 *
 * - Waiters are served strictly in arrival order: a small request never overtakes a large one
 *   that came first, so a big page read cannot be starved by a stream of small ones.
 * - A request larger than the burst is let through once the bucket holds a full burst and
 *   leaves the bucket in debt; later requests wait until the debt is paid back. Splitting it
 *   would gain nothing and refusing it would deadlock, and the long-run rate still holds:
 *   over any interval T at most burst + rate·T bytes are admitted, plus one request's excess.
 * - Time comes from an injected Clock, so tests run on a ManualClock without sleeping.
 */
export class TokenBucket {
  private currentRate: number;
  private burstBytes: number;
  private readonly burstExplicit: boolean;
  private readonly clock: Clock;
  private tokens: number;
  private updatedAt: number;
  private readonly queue: Waiter[] = [];
  /** The single pending wake-up, replaced when the queue or the rate changes. */
  private readonly timer: WakeTimer;

  constructor(opts: TokenBucketOptions) {
    this.clock = opts.clock ?? monotonicClock;
    this.currentRate = checkRate(opts.rate);
    this.burstExplicit = opts.burst !== undefined;
    this.burstBytes = this.burstExplicit ? checkBurst(opts.burst!) : this.currentRate;
    // Start full: the first reads after startup go at once, as after any idle period.
    this.tokens = this.burstBytes;
    this.updatedAt = this.clock.now();
    this.timer = new WakeTimer(this.clock);
  }

  get rate(): number {
    return this.currentRate;
  }

  get burst(): number {
    return this.burstBytes;
  }

  /** Requests waiting for tokens (for metrics). */
  get waiting(): number {
    return this.queue.length;
  }

  /** Resolves once `n` bytes may pass; rejects with FanoutError ABORTED if `signal` aborts first. */
  take(n: number, signal?: AbortSignal): Promise<void> {
    const refused = refusal(n, signal);
    if (refused) return refused;
    if (this.currentRate === 0 || n === 0) return Promise.resolve();
    this.refill();
    // Only skip the queue when nobody is queued: FIFO even if the newcomer would fit.
    if (this.queue.length === 0 && this.tokens >= Math.min(n, this.burstBytes)) {
      this.tokens -= n;
      return Promise.resolve();
    }
    return waitForBytes(
      n,
      signal,
      (waiter) => {
        this.queue.push(waiter);
        if (this.queue.length === 1) this.schedule();
      },
      (waiter) => this.cancel(waiter),
    );
  }

  /**
   * Changes the rate at runtime (e.g. when a line's budget is re-split between sources).
   * Waiters are re-timed at the new rate; 0 releases everyone.
   */
  setRate(rate: number): void {
    this.refill();
    const wasUnlimited = this.currentRate === 0;
    this.currentRate = checkRate(rate);
    if (!this.burstExplicit) {
      this.burstBytes = this.currentRate;
      // A lower burst caps what was saved up; debt (negative tokens) is kept.
      this.tokens = Math.min(this.tokens, this.burstBytes);
    }
    // Coming back from unlimited: nothing was being counted, so start full as at construction.
    if (wasUnlimited) this.tokens = this.burstBytes;
    this.pump();
  }

  private refill(): void {
    const now = this.clock.now();
    const elapsed = now - this.updatedAt;
    this.updatedAt = now;
    if (elapsed > 0 && this.currentRate > 0) {
      this.tokens = Math.min(this.burstBytes, this.tokens + (elapsed * this.currentRate) / 1000);
    }
  }

  /** Admits waiters from the head of the queue while tokens allow, then re-arms the timer. */
  private pump(): void {
    this.refill();
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (this.currentRate !== 0) {
        if (this.tokens < Math.min(head.n, this.burstBytes)) break;
        this.tokens -= head.n;
      }
      this.queue.shift();
      admit(head);
    }
    this.schedule();
  }

  /** One timer at most, for the head of the queue: waiters behind it cannot go first anyway. */
  private schedule(): void {
    this.timer.clear();
    const head = this.queue[0];
    if (!head || this.currentRate === 0) return;
    const need = Math.min(head.n, this.burstBytes) - this.tokens;
    this.timer.set((need * 1000) / this.currentRate, () => this.pump());
  }

  private cancel(waiter: Waiter): void {
    const index = this.queue.indexOf(waiter);
    if (index < 0) return;
    this.queue.splice(index, 1);
    cancelled(waiter);
    // The head left: the next one may fit already, or needs a different timer.
    if (index === 0) this.pump();
  }
}

function checkRate(rate: number): number {
  if (!Number.isFinite(rate) || rate < 0) throw new FanoutError('INVALID_ARGUMENT', `invalid rate ${rate} bytes/s`);
  return rate;
}

function checkBurst(burst: number): number {
  if (!Number.isFinite(burst) || burst <= 0) throw new FanoutError('INVALID_ARGUMENT', `invalid burst ${burst} bytes`);
  return burst;
}
