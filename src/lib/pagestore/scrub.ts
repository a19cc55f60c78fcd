import type { Clock } from '../../core/clock.js';
import type { PageStore } from './store.js';

export interface ScrubOptions {
  /** Bytes re-verified per second; 0 turns the scrub off. */
  rate: number;
  /**
   * Bytes each page counts for against the rate at the least (default 0). A page costs an open,
   * a stat, a read and a close whatever its size: with 64 KiB pages a rate in bytes alone meant
   * 256 pages a second, and the scrub's syscalls took more of the worker than its reads did.
   */
  minPageCost?: number;
  clock: Clock;
  /** Told of every page read and checked (its bytes), intact or not. */
  onScrubbed?(bytes: number): void;
  /** Told of every page the scrub found corrupt (already dropped from the store). */
  onCorrupt?(key: string): void;
  /** Told when a page could not be read (an I/O error); the scrub goes on with the next. */
  onError?(key: string, err: Error): void;
}

/** How long an empty store waits before looking again. */
const EMPTY_WAIT_MS = 1000;

/**
 * Re-reads every stored page at a steady rate and checks it against its checksum, pass after
 * pass, dropping pages the disk corrupted so the next read refetches them. Hits sent by the
 * kernel are not read on the way out (the store trusts a file whose mtime and size did not
 * change), and /v1/data and S3 clients have no checksum of their own: the scrub is what finds
 * silent media corruption before one of them is sent it. The rate bounds its disk and CPU cost
 * (a page of S bytes is followed by a pause of S / rate); pages stored during a pass are taken
 * by the next one.
 */
export class Scrubber {
  constructor(
    private readonly store: PageStore,
    private readonly options: ScrubOptions,
  ) {}

  /** Runs until `signal` aborts (resolves then); does nothing when the rate is 0. */
  async run(signal: AbortSignal): Promise<void> {
    const { rate, clock } = this.options;
    if (rate <= 0) return;
    while (!signal.aborted) {
      const keys = this.store.keys();
      if (keys.length === 0) {
        await this.pause(EMPTY_WAIT_MS, signal);
        continue;
      }
      for (const key of keys) {
        if (signal.aborted) return;
        const size = this.store.sizeOf(key);
        if (size === undefined) continue; // evicted since the pass began
        let result;
        try {
          result = await this.store.verify(key);
        } catch (err) {
          this.options.onError?.(key, err as Error);
          result = 'error' as const;
        }
        if (result === 'absent') continue;
        this.options.onScrubbed?.(size);
        if (result === 'corrupt') this.options.onCorrupt?.(key);
        await this.pause((Math.max(size, this.options.minPageCost ?? 0) / rate) * 1000, signal);
      }
    }
  }

  private async pause(ms: number, signal: AbortSignal): Promise<void> {
    await this.options.clock.sleep(ms, signal).catch(() => {});
  }
}
