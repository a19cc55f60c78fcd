/**
 * A response body as an async iterator over the chunks the parser hands on. Bounded: past
 * `highWater` queued bytes the connection is told to stop reading, and told to go on once the
 * consumer has taken the queue below half of it.
 */
export class BodyQueue implements AsyncIterableIterator<Buffer> {
  private readonly chunks: Buffer[] = [];
  private first = 0;
  private bytes = 0;
  private ended = false;
  private error: Error | undefined;
  private waiter: { resolve: (r: IteratorResult<Buffer>) => void; reject: (e: Error) => void } | undefined;
  private stopped = false;

  constructor(
    private readonly highWater: number,
    private readonly flow: { pause(): void; resume(): void; abandon(): void },
  ) {}

  /** Hands a chunk to the waiting reader or queues it; past the high-water mark the source is paused. */
  push(chunk: Buffer): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter.resolve({ value: chunk, done: false });
      return;
    }
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (!this.stopped && this.bytes >= this.highWater) {
      this.stopped = true;
      this.flow.pause();
    }
  }

  end(): void {
    this.ended = true;
    this.settle();
  }

  fail(error: Error): void {
    if (this.ended || this.error) return;
    this.error = error;
    this.chunks.length = 0;
    this.first = 0;
    this.bytes = 0;
    this.settle();
  }

  get finished(): boolean {
    return this.ended || this.error !== undefined;
  }

  next(): Promise<IteratorResult<Buffer>> {
    if (this.error) return Promise.reject(this.error);
    if (this.first < this.chunks.length) {
      const chunk = this.chunks[this.first]!;
      this.chunks[this.first++] = undefined as unknown as Buffer;
      if (this.first === this.chunks.length) {
        this.chunks.length = 0;
        this.first = 0;
      }
      this.bytes -= chunk.length;
      if (this.stopped && this.bytes < this.highWater / 2) {
        this.stopped = false;
        this.flow.resume();
      }
      return Promise.resolve({ value: chunk, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    if (this.stopped) {
      this.stopped = false;
      this.flow.resume();
    }
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /** The consumer stopped early (break, throw): a response not read to its end costs its connection. */
  return(): Promise<IteratorResult<Buffer>> {
    if (!this.finished) this.flow.abandon();
    this.fail(new Error('body abandoned'));
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private settle(): void {
    const waiter = this.waiter;
    if (!waiter) return;
    this.waiter = undefined;
    if (this.error) waiter.reject(this.error);
    else if (this.ended) waiter.resolve({ value: undefined, done: true });
  }
}
