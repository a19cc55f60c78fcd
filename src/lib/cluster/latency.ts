import type { Clock } from '../../core/clock.js';

export interface LatencyTrackerOptions {
  /** Samples kept (a ring buffer): memory stays bounded however many pages are read. */
  capacity?: number;
  /** Samples older than this are ignored, so the estimate follows the cluster as it changes. */
  maxAgeMs?: number;
  /** Below this many recent samples there is no estimate (quantile() returns undefined). */
  minSamples?: number;
}

/**
 * Recent latencies of one kind (a page request's time to first byte) and their quantiles.
 * Bounded: a fixed ring of samples with their times; old ones age out.
 */
export class LatencyTracker {
  private readonly values: Float64Array;
  private readonly times: Float64Array;
  private next = 0;
  private count = 0;
  private readonly capacity: number;
  private readonly maxAgeMs: number;
  private readonly minSamples: number;
  /**
   * The sorted recent samples, rebuilt only after a new sample or when some may have aged out:
   * every page a reader fetches records one and asks for the hedge delay, so this is sorted once
   * a page. A typed array sorts numerically without calling a comparator (V8's builtin sort),
   * in a buffer kept for it: 256 samples in ≈ 10 µs on this machine, where a fresh Array's sort
   * with (a, b) => a - b took 30–55 µs.
   */
  private readonly sorted: Float64Array;
  /** Samples in `sorted`; undefined when it must be rebuilt. */
  private sortedCount: number | undefined;
  private sortedAt = 0;

  constructor(
    private readonly clock: Clock,
    options: LatencyTrackerOptions = {},
  ) {
    this.capacity = Math.max(1, options.capacity ?? 256);
    this.maxAgeMs = options.maxAgeMs ?? 60_000;
    this.minSamples = Math.max(1, options.minSamples ?? 8);
    this.values = new Float64Array(this.capacity);
    this.times = new Float64Array(this.capacity);
    this.sorted = new Float64Array(this.capacity);
  }

  record(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    this.values[this.next] = ms;
    this.times[this.next] = this.clock.now();
    this.next = (this.next + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
    this.sortedCount = undefined;
  }

  /** The q-quantile (0..1) of the samples younger than maxAgeMs, or undefined with too few. */
  quantile(q: number): number | undefined {
    const now = this.clock.now();
    let count = this.sortedCount;
    if (count === undefined || now - this.sortedAt > 1000) {
      count = 0;
      for (let i = 0; i < this.count; i++) {
        if (now - this.times[i]! <= this.maxAgeMs) this.sorted[count++] = this.values[i]!;
      }
      this.sorted.subarray(0, count).sort();
      this.sortedCount = count;
      this.sortedAt = now;
    }
    if (count < this.minSamples) return undefined;
    const rank = Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1));
    return this.sorted[rank];
  }

  /** Recent samples counted (for status and tests). */
  get size(): number {
    return this.count;
  }
}
