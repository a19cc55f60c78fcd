import type { Clock } from '../../core/clock.js';

/** One interval of a worker's activity: what the dashboard charts. */
export interface HistorySample {
  /** End of the interval, ms since the epoch, a multiple of the interval on every worker (so pages can merge by t). */
  t: number;
  /** Length of time the interval really covered (ms): the first one after start may be shorter. */
  ms: number;
  hits: number;
  misses: number;
  /** Page bytes sent to readers in the interval. */
  served: number;
  /** Bytes read from each mount's source in the interval. */
  source: Record<string, number>;
  /** This worker's share of each mount's source budget at the end of the interval (bytes/s, 0 = unlimited). */
  budget: Record<string, number>;
  /** Fills (source or peer reads) in flight at the end of the interval. */
  fills: number;
  /** Bytes in the page store at the end of the interval. */
  used: number;
}

/** Cumulative counters since the worker started; the history keeps their differences. */
export interface CounterReadings {
  hits: number;
  misses: number;
  served: number;
  source: Record<string, number>;
}

export interface HistorySources {
  counters(): Promise<CounterReadings>;
  fills(): number;
  used(): number;
  budgets(): Record<string, number>;
}

export interface HistoryOptions {
  clock: Clock;
  /** Default 5 s. */
  intervalMs?: number;
  /** Default 15 minutes. */
  windowMs?: number;
}

export const DEFAULT_INTERVAL_MS = 5_000;
export const DEFAULT_WINDOW_MS = 15 * 60_000;

/**
 * The last few minutes of a worker, one sample per interval, in a ring of fixed size: memory
 * stays bounded however long the worker runs (180 samples of a few numbers per mount). Samples
 * are taken on wall-clock multiples of the interval so that every worker's samples share their
 * timestamps and the dashboard can add them up across members.
 */
export class StatusHistory {
  readonly intervalMs: number;
  readonly capacity: number;
  private readonly ring: (HistorySample | undefined)[];
  private next = 0;
  private count = 0;
  private last: { t: number; readings: CounterReadings } | undefined;

  constructor(
    private readonly sources: HistorySources,
    private readonly options: HistoryOptions,
  ) {
    this.intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
    this.capacity = Math.max(1, Math.ceil((options.windowMs ?? DEFAULT_WINDOW_MS) / this.intervalMs));
    this.ring = new Array(this.capacity);
  }

  /**
   * Reads the counters and records the interval since the previous reading as a sample at `t`.
   * The first reading is only the baseline: a sample of everything since start would be one
   * giant spike.
   */
  async sample(t = this.options.clock.now()): Promise<void> {
    const readings = await this.sources.counters();
    const previous = this.last;
    this.last = { t, readings };
    if (!previous) return;
    const delta = (now: number, before: number | undefined) => Math.max(0, now - (before ?? 0));
    const source: Record<string, number> = {};
    for (const [mount, bytes] of Object.entries(readings.source)) source[mount] = delta(bytes, previous.readings.source[mount]);
    this.push({
      t,
      ms: t - previous.t,
      hits: delta(readings.hits, previous.readings.hits),
      misses: delta(readings.misses, previous.readings.misses),
      served: delta(readings.served, previous.readings.served),
      source,
      budget: this.sources.budgets(),
      fills: this.sources.fills(),
      used: this.sources.used(),
    });
  }

  /** Samples with t > `after`, oldest first. */
  since(after = 0): HistorySample[] {
    const out: HistorySample[] = [];
    for (let i = 0; i < this.count; i++) {
      const sample = this.ring[(this.next - this.count + i + this.capacity) % this.capacity]!;
      if (sample.t > after) out.push(sample);
    }
    return out;
  }

  /**
   * Samples on every interval boundary until `signal` aborts. A failed reading is skipped (the
   * next interval then covers both): the history is for eyes, not for accounting.
   */
  async run(signal: AbortSignal): Promise<void> {
    const { clock } = this.options;
    await this.sample().catch(() => {});
    let previous = 0;
    while (!signal.aborted) {
      const now = clock.now();
      let boundary = (Math.floor(now / this.intervalMs) + 1) * this.intervalMs;
      // A timer may fire a little early: never sample the same boundary twice. A clock set back
      // (an NTP step, a resumed VM) is followed: before, the next boundary stayed after the last
      // one, an hour's wait for a step back of an hour, and the charts stood still.
      if (boundary <= previous && previous - now <= this.intervalMs) boundary = previous + this.intervalMs;
      previous = boundary;
      try {
        await clock.sleep(boundary - now, signal);
      } catch {
        return;
      }
      if (signal.aborted) return;
      await this.sample(boundary).catch(() => {});
    }
  }

  private push(sample: HistorySample): void {
    this.ring[this.next] = sample;
    this.next = (this.next + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
  }
}
