import { FanoutError } from '../../core/errors.js';
import type { Clock } from '../../core/clock.js';

interface Cached<T> {
  expires: number;
  value: Promise<T>;
  /** What the entry is counted as against maxBytes (see entryCost). */
  cost: number;
}

/**
 * Bytes an entry is counted as: its key three times (the key, and the path again in the answer:
 * a FileInfo's path, or a not-found error's message) and a fixed part for the objects around them.
 * A stat of a missing 4 KB path held ≈ 16 KB before its error was made compact, ≈ 10.6 KB after.
 */
function entryCost(key: string): number {
  return 3 * key.length + ENTRY_OVERHEAD;
}
const ENTRY_OVERHEAD = 256;

/**
 * Answers (stat results, listings) reused for `ttlMs`: the TTL bounds how stale an answer can
 * be. Concurrent lookups of the same key share one load. Not-found answers are cached too, so a
 * hot missing path does not hammer the source; other errors are not. The entries are bounded in
 * number and in bytes (long keys are a client's choice): past either bound the oldest go first.
 */
export class TtlCache<T> {
  private readonly entries = new Map<string, Cached<T>>();
  private bytes = 0;

  constructor(
    private readonly ttlMs: number,
    private readonly clock: Clock,
    private readonly maxEntries = 100_000,
    private readonly maxBytes = 32 * 1024 * 1024,
  ) {}

  get(key: string, load: () => Promise<T>): Promise<T> {
    const now = this.clock.now();
    const hit = this.entries.get(key);
    if (hit && hit.expires > now) return hit.value;
    const value = load();
    const entry = { expires: now + this.ttlMs, value, cost: entryCost(key) };
    this.insert(key, entry, now);
    value.catch((err) => {
      if (this.entries.get(key) !== entry) return;
      // Errors other than "not found" are not cached: the next request retries the source.
      if (!(err instanceof FanoutError && err.code === 'NOT_FOUND')) return this.remove(key);
      // A not-found answer is kept as its code and message alone: the source's own error (its
      // cause: a system error naming the server's full path twice, with a stack) is not needed
      // again, and was a third of what a flood of distinct missing paths held.
      entry.value = Promise.reject(new FanoutError('NOT_FOUND', err.message));
      entry.value.catch(() => {});
    });
    return value;
  }

  /** The answer cached for `key` while it is reused, without loading one. */
  fresh(key: string): Promise<T> | undefined {
    const hit = this.entries.get(key);
    return hit && hit.expires > this.clock.now() ? hit.value : undefined;
  }

  /** Stores a value learned elsewhere (e.g. file infos that came with a listing). */
  set(key: string, value: T): void {
    const now = this.clock.now();
    this.insert(key, { expires: now + this.ttlMs, value: Promise.resolve(value), cost: entryCost(key) }, now);
  }

  /** Answers held, expired ones not yet dropped included. */
  get size(): number {
    return this.entries.size;
  }

  /** What the answers held are counted as (see entryCost). */
  get heldBytes(): number {
    return this.bytes;
  }

  /** How long the answer cached for `key` is still reused (ms; 0 if none). */
  remainingMs(key: string): number {
    const hit = this.entries.get(key);
    return hit ? Math.max(0, hit.expires - this.clock.now()) : 0;
  }

  invalidate(key: string): void {
    this.remove(key);
  }

  /**
   * Adds `entry` last (a key set again moves to the end), so the entries stay in the order they
   * expire, and drops from the front the expired ones, then as many more as the bounds need: a
   * flood of lookups of distinct missing paths is forgotten once its TTL is over, and holds at
   * most maxBytes meanwhile. Before, expired entries went only once 100,000 were held (found by a
   * fault hunt: 30,000 stats of 4 KB paths kept 400 MiB for as long as nothing else was looked up).
   */
  private insert(key: string, entry: Cached<T>, now: number): void {
    this.remove(key);
    this.entries.set(key, entry);
    this.bytes += entry.cost;
    for (const [oldest, cached] of this.entries) {
      if (cached.expires > now && this.entries.size <= this.maxEntries && this.bytes <= this.maxBytes) break;
      this.remove(oldest);
    }
  }

  private remove(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.bytes -= entry.cost;
  }
}
