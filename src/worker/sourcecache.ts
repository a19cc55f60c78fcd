import { FanoutError } from '../core/errors.js';
import type { Clock } from '../core/clock.js';
import type { DirEntry, FileInfo } from '../core/types.js';

/**
 * Stat and list results, reused for `ttlMs` (the documented bounded staleness: a change at the
 * source is seen by new readers at most ttlMs later). Concurrent lookups of the same path share
 * one source request. Not-found answers are cached too, so a hot missing path does not hammer
 * the source.
 */
interface Cached<T> {
  expires: number;
  value: Promise<T>;
}

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

  invalidate(key: string): void {
    this.entries.delete(key);
  }

  private sweep(now: number): void {
    for (const [key, entry] of this.entries) {
      if (entry.expires <= now || this.entries.size > this.maxEntries) this.entries.delete(key);
    }
  }
}

export type StatCache = TtlCache<FileInfo>;
export type ListCache = TtlCache<DirEntry[]>;
