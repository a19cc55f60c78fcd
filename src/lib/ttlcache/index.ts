import { FanoutError } from '../../core/errors.js';
import type { Clock } from '../../core/clock.js';

interface Cached<T> {
  expires: number;
  value: Promise<T>;
}

/**
 * Answers (stat results, listings) reused for `ttlMs`: the TTL bounds how stale an answer can
 * be. Concurrent lookups of the same key share one load. Not-found answers are cached too, so a
 * hot missing path does not hammer the source; other errors are not.
 */
export class TtlCache<T> {
  private readonly entries = new Map<string, Cached<T>>();

  constructor(
    private readonly ttlMs: number,
    private readonly clock: Clock,
    private readonly maxEntries = 100_000,
  ) {}

  get(key: string, load: () => Promise<T>): Promise<T> {
    const now = this.clock.now();
    const hit = this.entries.get(key);
    if (hit && hit.expires > now) return hit.value;
    const value = load();
    const entry = { expires: now + this.ttlMs, value };
    this.entries.set(key, entry);
    // Errors other than "not found" are not cached: the next request retries the source.
    value.catch((err) => {
      if (!(err instanceof FanoutError && err.code === 'NOT_FOUND') && this.entries.get(key) === entry) {
        this.entries.delete(key);
      }
    });
    if (this.entries.size > this.maxEntries) this.sweep(now);
    return value;
  }

  /** Stores a value learned elsewhere (e.g. file infos that came with a listing). */
  set(key: string, value: T): void {
    this.entries.set(key, { expires: this.clock.now() + this.ttlMs, value: Promise.resolve(value) });
    if (this.entries.size > this.maxEntries) this.sweep(this.clock.now());
  }

  /** How long the answer cached for `key` is still reused (ms; 0 if none). */
  remainingMs(key: string): number {
    const hit = this.entries.get(key);
    return hit ? Math.max(0, hit.expires - this.clock.now()) : 0;
  }

  invalidate(key: string): void {
    this.entries.delete(key);
  }

  private sweep(now: number): void {
    for (const [key, entry] of this.entries) {
      if (entry.expires <= now || this.entries.size > this.maxEntries) this.entries.delete(key);
    }
  }
}
