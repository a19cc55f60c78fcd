/**
 * Pages fetched ahead of their reads (a file's first page at open, the next files of a
 * directory), bounded in flight. Without a bound every open past the first-pages allowance
 * started a fetch, and the SDK's batch reader queued them all: 10,000 files opened quickly
 * queued 10,000 page fetches, and a read joining one of them waited behind the rest.
 *
 * A prefetch is a hint (its read fetches the page anyway), so past `slots` in flight it waits in
 * a short queue, and past that the oldest waiting one is dropped: the files opened last are the
 * ones about to be read, an old one's read has likely fetched its page already.
 */
export class PrefetchLimit {
  private running = 0;
  /** Prefetches waiting for a slot, oldest first. */
  private readonly waiting: (() => Promise<unknown> | undefined)[] = [];
  private droppedCount = 0;

  constructor(
    /** Prefetches in flight at once. */
    private readonly slots: number,
    /** Prefetches waiting for a slot; the oldest beyond it is dropped. */
    private readonly queue: number,
  ) {}

  /**
   * Starts `prefetch` now if a slot is free, else when one is. `prefetch` returns undefined when
   * there is nothing left to do (the page arrived or is on its way meanwhile): no slot is taken.
   * Its promise must settle (a failed prefetch is its own to swallow).
   */
  run(prefetch: () => Promise<unknown> | undefined): void {
    if (this.running < this.slots) return this.start(prefetch);
    this.waiting.push(prefetch);
    if (this.waiting.length > this.queue) {
      this.waiting.shift();
      this.droppedCount++;
    }
  }

  /** Prefetches in flight, waiting, and dropped so far. */
  stats(): { inflight: number; queued: number; dropped: number } {
    return { inflight: this.running, queued: this.waiting.length, dropped: this.droppedCount };
  }

  private start(prefetch: () => Promise<unknown> | undefined): void {
    const running = prefetch();
    if (!running) return this.next();
    this.running++;
    const done = () => {
      this.running--;
      this.next();
    };
    running.then(done, done);
  }

  private next(): void {
    const prefetch = this.running < this.slots ? this.waiting.shift() : undefined;
    if (prefetch) this.start(prefetch);
  }
}
