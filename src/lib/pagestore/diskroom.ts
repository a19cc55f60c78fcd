import type { Clock } from '../../core/clock.js';
import { effectiveCapacity, type DiskSpace, type StatDisk } from './capacity.js';

export interface DiskRoomOptions {
  dir: string;
  /** Configured capacity, bytes. */
  configured: number;
  statDisk: StatDisk;
  clock: Clock;
  /** How often free space is re-read on the write path. */
  intervalMs: number;
  /** The store's index: what it holds, and the capacity eviction works from (set here). */
  index: { readonly used: number; capacity: number };
  onChange?(effective: number, configured: number, disk: DiskSpace | undefined): void;
}

/**
 * The page store's effective capacity (see capacity.ts): the configured one, lowered to what the
 * file system can hold, and to what the store held when a write last found the disk full.
 */
export class DiskRoom {
  private lastCheck = -Infinity;
  private disk: DiskSpace | undefined;
  /** What the store held when a write last found the disk full (quota limits statfs cannot see). */
  private fullAt = Infinity;

  constructor(private readonly options: DiskRoomOptions) {}

  /** Free bytes on the store's file system at the last check (undefined before the first). */
  get free(): number | undefined {
    return this.disk?.free;
  }

  /** The last check is older than the interval. */
  due(): boolean {
    return this.options.clock.now() - this.lastCheck >= this.options.intervalMs;
  }

  /** A write found the disk full: the disk holds less than the store thought, never plan for more than is held now. */
  markFull(): void {
    this.fullAt = this.options.index.used;
  }

  /**
   * Reads free space and sets the effective capacity. If statfs fails the last figure stays:
   * a write that then finds the disk full still lowers the capacity through `fullAt`, which
   * periodic checks forget (space may have been freed, or a quota raised).
   */
  async check(options: { forgetFull?: boolean } = {}): Promise<void> {
    const { index, configured } = this.options;
    this.lastCheck = this.options.clock.now();
    if (options.forgetFull) this.fullAt = Infinity;
    try {
      this.disk = await this.options.statDisk(this.options.dir);
    } catch {
      // keep the last figure; without one, the configured capacity (bounded by fullAt) holds
    }
    const fits = this.disk ? effectiveCapacity(configured, index.used, this.disk) : configured;
    const effective = Math.max(0, Math.min(fits, this.fullAt));
    if (effective !== index.capacity) {
      index.capacity = effective;
      this.options.onChange?.(effective, configured, this.disk);
    }
  }
}
