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
    this.insert(key, entry, now);
    // Errors other than "not found" are not cached: the next request retries the source.
    value.catch((err) => {
      if (!(err instanceof FanoutError && err.code === 'NOT_FOUND') && this.entries.get(key) === entry) {
        this.entries.delete(key);
      }
    });
    return value;
  }

  /** Stores a value learned elsewhere (e.g. file infos that came with a listing). */
  set(key: string, value: T): void {
    const now = this.clock.now();
    this.insert(key, { expires: now + this.ttlMs, value: Promise.resolve(value) }, now);
  }

  /** Answers held, expired ones not yet dropped included. */
  get size(): number {
    return this.entries.size;
  }

  /** How long the answer cached for `key` is still reused (ms; 0 if none). */
  remainingMs(key: string): number {
    const hit = this.entries.get(key);
    return hit ? Math.max(0, hit.expires - this.clock.now()) : 0;
  }

  invalidate(key: string): void {
    this.entries.delete(key);
  }

  /**
   * Adds `entry` last (a key set again moves to the end), so the entries stay in the order they
   * expire, and drops the expired ones at the front: a flood of lookups of distinct missing paths
   * is forgotten once its TTL is over. Before, expired entries went only once 100,000 were held
   * (found by a fault hunt: 30,000 stats of 4 KB paths kept 400 MiB for as long as nothing else
   * was looked up).
   */
  private insert(key: string, entry: Cached<T>, now: number): void {
    this.entries.delete(key);
    this.entries.set(key, entry);
    for (const [oldest, cached] of this.entries) {
      if (cached.expires > now) break;
      this.entries.delete(oldest);
    }
    if (this.entries.size > this.maxEntries) this.sweep(now);
  }

  private sweep(now: number): void {
    for (const [key, entry] of this.entries) {
      if (entry.expires <= now || this.entries.size > this.maxEntries) this.entries.delete(key);
    }
  }
}
