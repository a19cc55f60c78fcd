/**
 * Least-recently-used index of pages with byte accounting and high/low watermarks.
 * Pure bookkeeping (no I/O) so eviction policy is unit-tested directly. Map keeps insertion
 * order, so re-inserting on access makes the first entry the least recently used.
 */
export interface LruEntry {
  key: string;
  /** Bytes of the entry's data. */
  size: number;
  /**
   * What the entry takes where capacity is counted, if not `size`: for a page file, its size
   * rounded up to whole file-system blocks (a 200-byte page takes a 4 KiB block on disk).
   */
  footprint?: number;
}

export interface Watermarks {
  /** Eviction starts when used bytes exceed high × capacity. */
  high: number;
  /** ... and stops once used bytes are at or below low × capacity. */
  low: number;
}

export class LruIndex<E extends LruEntry> {
  private readonly entries = new Map<string, E>();
  private usedBytes = 0;
  private dataBytes = 0;

  constructor(
    private capacityBytes: number,
    readonly watermarks: Watermarks,
  ) {
    if (!(watermarks.low > 0 && watermarks.low <= watermarks.high && watermarks.high <= 1)) {
      throw new RangeError(`watermarks must satisfy 0 < low <= high <= 1, got ${JSON.stringify(watermarks)}`);
    }
  }

  /** Watermarks are fractions of this; the page store lowers it when the disk is smaller. */
  get capacity(): number {
    return this.capacityBytes;
  }

  set capacity(bytes: number) {
    if (!(bytes >= 0)) throw new RangeError(`capacity must be >= 0, got ${bytes}`);
    this.capacityBytes = bytes;
  }

  /** What the entries take, as capacity counts it (their footprints), and the overhead. */
  get used(): number {
    return this.usedBytes;
  }

  /**
   * Counts `bytes` more (or fewer) in `used` that no entry holds and eviction cannot free: the
   * page store's directories. Eviction takes pages until they and the overhead fit.
   */
  addOverhead(bytes: number): void {
    this.usedBytes += bytes;
  }

  /** Bytes of the entries' data (their sizes). */
  get bytes(): number {
    return this.dataBytes;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Returns the entry and marks it most recently used. */
  touch(key: string): E | undefined {
    const entry = this.entries.get(key);
    if (entry) {
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
    return entry;
  }

  peek(key: string): E | undefined {
    return this.entries.get(key);
  }

  /** Adds (or replaces) an entry as most recently used. */
  add(entry: E): void {
    this.remove(entry.key);
    this.entries.set(entry.key, entry);
    this.usedBytes += entry.footprint ?? entry.size;
    this.dataBytes += entry.size;
  }

  remove(key: string): E | undefined {
    const entry = this.entries.get(key);
    if (entry) {
      this.entries.delete(key);
      this.usedBytes -= entry.footprint ?? entry.size;
      this.dataBytes -= entry.size;
    }
    return entry;
  }

  /** True when `extra` more bytes (of footprint) would push usage over the high watermark. */
  needsEviction(extra = 0): boolean {
    return this.usedBytes + extra > this.capacity * this.watermarks.high;
  }

  /**
   * Removes least recently used entries until usage (plus `extra` bytes about to be added) is
   * at or below the low watermark, and returns them so the caller can delete their files.
   * Entries for which `canEvict` is false (pinned) are skipped.
   */
  evict(extra = 0, canEvict: (entry: E) => boolean = () => true): E[] {
    if (!this.needsEviction(extra)) return [];
    const target = this.capacity * this.watermarks.low;
    const victims: E[] = [];
    for (const entry of this.entries.values()) {
      if (this.usedBytes + extra <= target) break;
      if (!canEvict(entry)) continue;
      victims.push(entry);
      this.entries.delete(entry.key);
      this.usedBytes -= entry.footprint ?? entry.size;
      this.dataBytes -= entry.size;
    }
    return victims;
  }

  keys(): IterableIterator<string> {
    return this.entries.keys();
  }
}
