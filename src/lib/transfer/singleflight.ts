import { EventEmitter } from 'node:events';
import { crc32 } from '../checksum/index.js';
import { FanoutError } from '../../core/errors.js';
import type { BufferPool } from '../pagestore/index.js';

const EMPTY = Buffer.alloc(0);

/**
 * One in-flight source read of one page, shared by everyone who asks for that page while it
 * is being read. Bytes land in a single page buffer; each waiter streams from that buffer as
 * it fills, so the first bytes reach every waiter while the rest is still arriving, and the
 * source is read once however many wait.
 */
export class PageFill extends EventEmitter {
  /** Taken from the pool when the first byte arrives, so queued fills hold no memory. */
  buffer: Buffer = EMPTY;
  /**
   * Who still uses the buffer: the fill itself until it is stored, plus every reader until its
   * response is flushed. At zero the buffer goes back to the pool (fresh 4 MiB buffers fault
   * in page by page, which cost more than the copy into them).
   */
  private holds = 1;
  /**
   * Socket writes still queued with views of the buffer (waiters are sent the buffer itself, not
   * copies of it): the buffer is reused only once the last of them is done.
   */
  private pins = 0;
  received = 0;
  crc = 0;
  /** The page's SHA-256 (hex), when the source computed it as it read the whole page in one step. */
  sha256: string | undefined;
  error: FanoutError | undefined;
  done = false;
  readonly settled: Promise<void>;
  /** Aborted when every reader has left before the page was complete, or the table's stop signal fired: the source read stops. */
  private readonly abandoned = new AbortController();
  private readers = 0;
  /** Set by a caller that must see the page stored even if no reader is left (preloads). */
  keepAlive = false;
  /** What the page is, for people watching (the dashboard's fills in flight); the key alone says nothing. */
  origin: { mount: string; path: string; index: number; from: 'source' | 'peer' } | undefined;

  constructor(
    readonly key: string,
    readonly length: number,
    private readonly pool?: BufferPool,
    /** Takes back a source chunk once it is copied into the page (pooled read memory); nothing else holds it then. */
    private readonly releaseChunk?: (chunk: Buffer) => void,
  ) {
    super();
    this.setMaxListeners(0);
    this.settled = new Promise((resolve) => this.once('settled', resolve));
  }

  /**
   * Copies the source into the page buffer; never throws, records the outcome. Leaving the
   * loop early (error) returns the iterator, which destroys the underlying stream.
   */
  async run(source: AsyncIterable<Buffer>): Promise<void> {
    try {
      for await (const chunk of source) {
        if (this.received + chunk.length > this.length) {
          throw new FanoutError('SOURCE_ERROR', `source sent more than the ${this.length} bytes asked for`);
        }
        this.claimBuffer();
        // A source that read straight into the buffer (claimBuffer) hands back a view of it: no copy.
        if (chunk.buffer !== this.buffer.buffer || chunk.byteOffset !== this.buffer.byteOffset + this.received) chunk.copy(this.buffer, this.received);
        this.crc = crc32(chunk, this.crc);
        this.received += chunk.length;
        this.releaseChunk?.(chunk);
        this.emit('progress');
      }
      if (this.received !== this.length) {
        throw new FanoutError('SOURCE_TRUNCATED', `source ended after ${this.received} of ${this.length} bytes`);
      }
      this.done = true;
    } catch (err) {
      this.error =
        err instanceof FanoutError ? err : new FanoutError('SOURCE_ERROR', `source read failed: ${(err as Error).message}`, { cause: err });
    }
    this.emit('progress');
    this.emit('settled');
  }

  /**
   * The page buffer, taken now if no byte has arrived yet: a source that reads a whole small page
   * in one step reads into it and yields a view of it, which run() then keeps without a copy.
   */
  claimBuffer(): Buffer {
    if (this.buffer === EMPTY) this.buffer = this.pool?.acquire(this.length) ?? Buffer.allocUnsafe(this.length);
    return this.buffer;
  }

  /**
   * Forgets the buffer without giving it back to the pool: a read into it that failed its deadline
   * may still write into it from its thread. Only before any byte was received.
   */
  abandonBuffer(): void {
    if (this.received === 0) this.buffer = EMPTY;
  }

  get signal(): AbortSignal {
    return this.abandoned.signal;
  }

  /** A reader joins; pair with leave() when it has what it needs or went away. */
  enter(): void {
    this.readers++;
  }

  /**
   * A reader leaves. When the last one leaves an unfinished fill nobody asked to keep, the
   * source read is cancelled: a slow source must not keep reading (and hold a slot) for no one.
   */
  leave(): void {
    this.readers--;
    if (this.readers <= 0 && !this.keepAlive && !this.done && !this.error) {
      this.abandoned.abort(new FanoutError('ABORTED', 'every reader of this page left'));
    }
  }

  /** Stops an unfinished fill whatever its readers (the process is stopping): its signal aborts with `reason`. */
  stop(reason: unknown): void {
    if (!this.done && !this.error) this.abandoned.abort(reason);
  }

  /** Keeps the buffer out of the pool until the matching release(). */
  hold(): void {
    this.holds++;
  }

  release(): void {
    if (--this.holds > 0 || this.buffer === EMPTY) return;
    if (this.pins > 0) {
      // Only slow sockets keep it now: counted, so that new waiters copy instead once too many
      // buffers are kept that way (see PageFill.orphanedBytes).
      PageFill.orphanedBytes += this.buffer.length;
      return;
    }
    this.pool?.release(this.buffer);
    this.buffer = EMPTY;
  }

  /**
   * Buffers of finished fills kept only by socket writes still queued, process-wide, in bytes:
   * waiters write views of a fill's buffer only while this is under a bound (see ResponseFlow.
   * writeShared), so clients that stop reading keep a bounded number of page buffers alive.
   */
  static orphanedBytes = 0;

  /** A socket write of a view of the buffer starts; returns its unpin, to call when it is done. */
  pin(): () => void {
    this.pins++;
    let pinned = true;
    return () => {
      if (!pinned) return;
      pinned = false;
      if (--this.pins > 0 || this.holds > 0 || this.buffer === EMPTY) return;
      PageFill.orphanedBytes -= this.buffer.length;
      this.pool?.release(this.buffer);
      this.buffer = EMPTY;
    };
  }

  /**
   * Yields the page's bytes in order as they arrive; throws the fill's error if it fails. The
   * chunks are views of the fill's buffer: call hold() before and release() once they are no
   * longer referenced (e.g. the response carrying them has been flushed). `from` skips bytes a
   * reader already has.
   */
  async *chunks(signal?: AbortSignal, from = 0): AsyncGenerator<Buffer> {
    let sent = from;
    while (true) {
      if (this.received > sent) {
        const end = this.received;
        yield this.buffer.subarray(sent, end);
        sent = end;
        continue;
      }
      if (this.error) throw this.error;
      if (this.done) return;
      await this.nextProgress(signal);
    }
  }

  private nextProgress(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new FanoutError('ABORTED', 'reader went away'));
      const onProgress = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        this.off('progress', onProgress);
        reject(new FanoutError('ABORTED', 'reader went away'));
      };
      this.once('progress', onProgress);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** The set of fills in progress, keyed by page key: the single-flight table. */
export class SingleFlight {
  private readonly fills = new Map<string, PageFill>();

  constructor(
    private readonly pool?: BufferPool,
    /** See PageFill: called with every chunk a fill has copied. */
    private readonly releaseChunk?: (chunk: Buffer) => void,
    /**
     * Stops every fill, those in flight and any started later (the process is stopping): a fill's
     * signal then covers both ends of its reads, and a fill needs no signal of its own combining
     * them (a controller and two listeners per fill, measured in a cold small-file sync).
     */
    private readonly stop?: AbortSignal,
  ) {
    stop?.addEventListener('abort', () => {
      for (const fill of this.fills.values()) fill.stop(stop.reason);
    }, { once: true });
  }

  get inflight(): number {
    return this.fills.size;
  }

  get(key: string): PageFill | undefined {
    return this.fills.get(key);
  }

  /** The fills in progress (a snapshot), for status pages. */
  list(): PageFill[] {
    return [...this.fills.values()];
  }

  /**
   * Joins the fill for `key`, or starts one with `open(signal, fill)` (which returns the source stream;
   * `signal` aborts when every reader left, see PageFill.leave, or the table's stop signal fired) and
   * `onComplete` (called with the finished fill before it leaves the table, so a reader arriving
   * afterwards finds the page in the store). Returns the fill and whether this call started it.
   * INVALID_ARGUMENT when a fill of `key` runs at another length.
   */
  join(
    key: string,
    length: number,
    open: (signal: AbortSignal, fill: PageFill) => AsyncIterable<Buffer>,
    onComplete: (fill: PageFill) => Promise<void>,
  ): { fill: PageFill; started: boolean } {
    const existing = this.fills.get(key);
    // An abandoned fill is on its way out: a new reader starts a fresh one instead of its error.
    if (existing && !existing.signal.aborted) {
      // Only a content key (a page's hash) can be asked for at two lengths: one of the two
      // requests names a size its file does not have, and no reader gets bytes it did not ask for.
      if (existing.length !== length) throw new FanoutError('INVALID_ARGUMENT', `page ${key} is being read as ${existing.length} bytes, not ${length}: the request's size is not its file's`);
      return { fill: existing, started: false };
    }
    const fill = new PageFill(key, length, this.pool, this.releaseChunk);
    this.fills.set(key, fill);
    if (this.stop?.aborted) fill.stop(this.stop.reason);
    void (async () => {
      try {
        await fill.run(open(fill.signal, fill));
        if (fill.done) await onComplete(fill).catch(() => {});
      } catch (err) {
        // open() itself threw before streaming: fail the fill for its waiters.
        fill.error = err instanceof FanoutError ? err : new FanoutError('SOURCE_ERROR', (err as Error).message, { cause: err });
        fill.emit('progress');
        fill.emit('settled');
      } finally {
        if (this.fills.get(key) === fill) this.fills.delete(key);
        fill.release();
      }
    })();
    return { fill, started: true };
  }
}
