import type { Clock } from '../../core/clock.js';
import { admit, cancelled, refusal, waitForBytes, WakeTimer, type Waiter } from '../ratelimit/waiters.js';

/** Reads a client waits for, or preloads (`fanout load`, sync prefetch) that take what is left. */
export type TrafficClass = 'read' | 'preload';
export const TRAFFIC_CLASSES: readonly TrafficClass[] = ['read', 'preload'];

/** Tokens saved up while idle, as time at the rate: small, since every worker of a line may burst at once. */
const BURST_MS = 20;
/** The least burst, so a rate of a few kB/s still lets a source chunk through without a long debt. */
const MIN_BURST = 16 * 1024;

/**
 * A worker's share of one line: a token bucket of bytes/s with two queues. Reads go first;
 * preloads go when no read waits, and also whenever the preload credit (refilled at
 * `preloadMin`) covers them, so a stream of reads cannot starve preloads below their floor.
 * Unlike TokenBucket a rate of 0 lets nothing through (a worker may hold no share for a moment).
 * Each queue is FIFO; a request larger than the burst goes once the bucket is full and leaves
 * it in debt, so over any interval T at most burst + rate·T (+ one request's excess) passes.
 * The waiting and waking mechanics are TokenBucket's (ratelimit/waiters.ts); the policy is this one.
 */
export class ClassBucket {
  private currentRate = 0;
  private preloadRate = 0;
  private tokens = 0;
  private credit = 0;
  private updatedAt: number;
  private readonly queues: Record<TrafficClass, Waiter[]> = { read: [], preload: [] };
  private readonly queuedBytes: Record<TrafficClass, number> = { read: 0, preload: 0 };
  private readonly timer: WakeTimer;

  constructor(private readonly clock: Clock) {
    this.updatedAt = clock.now();
    this.timer = new WakeTimer(clock);
  }

  get rate(): number {
    return this.currentRate;
  }

  get preloadMin(): number {
    return this.preloadRate;
  }

  /** Requests and bytes waiting, per class (for demand, metrics and status). */
  waiting(cls: TrafficClass): { requests: number; bytes: number } {
    return { requests: this.queues[cls].length, bytes: this.queuedBytes[cls] };
  }

  /** Applies a new share; waiters are re-timed. Saved tokens never exceed the new burst. */
  setRate(rate: number, preloadMin: number): void {
    this.refill();
    this.currentRate = Math.max(0, rate);
    this.preloadRate = Math.max(0, Math.min(preloadMin, this.currentRate));
    this.tokens = Math.min(this.tokens, this.burst());
    this.credit = Math.min(this.credit, this.burst());
    this.pump();
  }

  take(n: number, cls: TrafficClass, signal?: AbortSignal): Promise<void> {
    const refused = refusal(n, signal);
    if (refused) return refused;
    if (n === 0) return Promise.resolve();
    return waitForBytes(
      n,
      signal,
      (waiter) => {
        this.queues[cls].push(waiter);
        this.queuedBytes[cls] += n;
        this.pump();
      },
      (waiter) => this.cancel(waiter, cls),
    );
  }

  private burst(): number {
    return Math.max(MIN_BURST, (this.currentRate * BURST_MS) / 1000);
  }

  private refill(): void {
    const now = this.clock.now();
    const elapsed = Math.max(0, now - this.updatedAt);
    this.updatedAt = now;
    const burst = this.burst();
    this.tokens = Math.min(burst, this.tokens + (elapsed * this.currentRate) / 1000);
    this.credit = Math.min(burst, this.credit + (elapsed * this.preloadRate) / 1000);
  }

  /** The class whose head goes next, or undefined if none may go yet. */
  private next(): TrafficClass | undefined {
    const read = this.queues.read[0];
    const preload = this.queues.preload[0];
    const fits = (w: Waiter, have: number) => have >= Math.min(w.n, this.burst());
    if (preload && fits(preload, this.credit) && fits(preload, this.tokens)) return 'preload';
    if (read) return fits(read, this.tokens) ? 'read' : undefined;
    if (preload && fits(preload, this.tokens)) return 'preload';
    return undefined;
  }

  private pump(): void {
    this.refill();
    if (this.currentRate > 0) {
      for (let cls = this.next(); cls; cls = this.next()) {
        const head = this.queues[cls].shift()!;
        this.queuedBytes[cls] -= head.n;
        this.tokens -= head.n;
        if (cls === 'preload') this.credit = Math.max(-this.burst(), this.credit - head.n);
        admit(head);
      }
    }
    this.schedule();
  }

  /** One timer, for when the next head can go (the earlier of the read head and the preload floor). */
  private schedule(): void {
    this.timer.clear();
    if (this.currentRate === 0) return; // a new share re-pumps
    const waits: number[] = [];
    const read = this.queues.read[0];
    const preload = this.queues.preload[0];
    const until = (n: number, have: number, rate: number) => (rate > 0 ? ((Math.min(n, this.burst()) - have) * 1000) / rate : Infinity);
    if (read) waits.push(until(read.n, this.tokens, this.currentRate));
    if (preload) {
      waits.push(Math.max(until(preload.n, this.credit, this.preloadRate), until(preload.n, this.tokens, this.currentRate)));
      if (!read) waits.push(until(preload.n, this.tokens, this.currentRate));
    }
    const ms = Math.min(...waits);
    if (Number.isFinite(ms)) this.timer.set(ms, () => this.pump());
  }

  private cancel(waiter: Waiter, cls: TrafficClass): void {
    const queue = this.queues[cls];
    const index = queue.indexOf(waiter);
    if (index < 0) return;
    queue.splice(index, 1);
    this.queuedBytes[cls] -= waiter.n;
    cancelled(waiter);
    if (index === 0) this.pump();
  }
}
