/** Time as a dependency, so TTLs, leases and rate limits are tested without sleeping. */
export interface Clock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
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
  });
}

// Read once: the wall time when this process started, the monotonic clock's zero in epoch ms.
const processStartedAt = performance.timeOrigin;

/**
 * For intervals, deadlines, TTLs, leases, rate limits and schedules inside this process: it never
 * steps when the wall clock is set (an NTP step, a VM resumed, a clock set by hand), so a peer
 * marked down for 5 s is not skipped for an hour, nor an etcd lease left to expire. Its readings are in
 * epoch ms (the process's start by the wall clock, plus the monotonic time since), so they read
 * like Date.now() — but drift from it by every step since the start: never persist them or compare
 * them with another process's times; that is wallClock's job.
 */
export const monotonicClock: Clock = {
  now: () => processStartedAt + performance.now(),
  sleep,
};

/**
 * For times persisted or compared across processes and hosts: page TTLs in policy.json, S3
 * signature dates, Last-Modified, dashboard history timestamps. Steps with the system clock.
 */
export const wallClock: Clock = {
  now: () => Date.now(),
  sleep,
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
