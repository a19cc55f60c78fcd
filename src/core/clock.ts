/** Time as a dependency, so TTLs, leases and rate limits are tested without sleeping. */
export interface Clock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** A clock that moves only when told to: pending sleeps resolve as time passes them. */
export class ManualClock implements Clock {
  private time: number;
  private sleepers: { until: number; resolve: () => void }[] = [];

  constructor(start = 0) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.sleepers.push({ until: this.time + ms, resolve });
      this.sleepers.sort((a, b) => a.until - b.until);
    });
  }

  /** Moves time forward, waking sleepers in order and letting each one's continuation run. */
  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    while (this.sleepers.length > 0 && this.sleepers[0]!.until <= target) {
      const next = this.sleepers.shift()!;
      this.time = Math.max(this.time, next.until);
      next.resolve();
      await new Promise((r) => setImmediate(r));
    }
    this.time = target;
    await new Promise((r) => setImmediate(r));
  }

  pendingSleeps(): number {
    return this.sleepers.length;
  }
}
