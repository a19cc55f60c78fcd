import type { StatResult } from '../client/index.js';
import { ByteBudget } from '../lib/transfer/index.js';
import { untilAborted } from './abort.js';

/** A page the reads allowance counts: its key and its bytes. */
export interface RoomPage {
  key: string;
  bytes: number;
}

/** Room taken (or being waited for) by one read for the pages it fetches. */
interface Claim {
  granted: boolean;
  /** Settles when the room is granted, or when its read left the queue without it. */
  settled: Promise<void>;
}

export const roomKey = (file: StatResult, index: number, pageSize: number): string => `${pageSize}\0${file.mount}\0${file.path}\0${file.version}\0${index}`;

/**
 * The `reads` allowance (--read-memory) by page: a page on its way holds room once, however many
 * reads want it. Before, two reads of one page starting together (two opens of a file, or a
 * page the window does not keep) each took room for it, and reads behind them waited for room
 * nobody used (over-count only: memory stayed within the bound).
 *
 * A read whose page another read has room for takes none for it; one whose page another read
 * waits for room for waits for that read's turn (holding nothing, so no wait can deadlock), then
 * finds the page on its way. Room is still taken for all of a read's other pages at once.
 */
export class ReadRoom {
  readonly budget: ByteBudget;
  private readonly claims = new Map<string, Claim>();

  constructor(bytes: number) {
    this.budget = new ByteBudget(bytes);
  }

  get inUse(): number {
    return this.budget.inUse;
  }

  /**
   * Room for the pages of `wanted()` (asked again after each wait: pages arrive meanwhile) that
   * no read has room for; resolves with its release, or undefined if none was needed. Rejects
   * with ABORTED when `signal` aborts, holding nothing.
   */
  async take(wanted: () => RoomPage[], signal?: AbortSignal): Promise<(() => void) | undefined> {
    for (;;) {
      const pages = wanted();
      const waiting = pages.map((p) => this.claims.get(p.key)).filter((c): c is Claim => c !== undefined && !c.granted);
      if (waiting.length > 0) {
        await untilAborted(Promise.all(waiting.map((c) => c.settled)), signal);
        continue;
      }
      const fresh = pages.filter((p) => !this.claims.has(p.key));
      if (fresh.length === 0) return undefined;
      return this.claim(fresh, signal);
    }
  }

  private async claim(pages: RoomPage[], signal: AbortSignal | undefined): Promise<() => void> {
    let settle!: () => void;
    const claim: Claim = { granted: false, settled: new Promise<void>((resolve) => (settle = resolve)) };
    for (const p of pages) this.claims.set(p.key, claim);
    const forget = () => {
      for (const p of pages) if (this.claims.get(p.key) === claim) this.claims.delete(p.key);
    };
    let release: () => void;
    try {
      release = await this.budget.acquire(pages.reduce((sum, p) => sum + p.bytes, 0), signal);
    } catch (err) {
      forget(); // the reads waiting on it look again, and one of them takes the room
      settle();
      throw err;
    }
    claim.granted = true;
    settle();
    return () => {
      forget();
      release();
    };
  }
}
