import { Readable } from 'node:stream';
import { FanoutError, abortError } from '../../core/errors.js';
import { IDLE_PROGRESS_BYTES, timedOut } from './deadlines.js';
import { destroyQuietly } from './util.js';

/** The bytes of an open range: a Readable, or any async iterable that can be torn down quietly. */
export type SourceBody = AsyncIterable<Buffer> & { on(event: 'error', fn: () => void): unknown; destroy(): unknown; destroyed?: boolean };

/**
 * An async iterable as a SourceBody: `destroy` runs `onDestroy` once. Its errors reach the reader
 * through the iterator; there is no emitter to crash anyone.
 */
export function iterableBody(iterable: AsyncIterable<Buffer>, onDestroy: () => void = () => {}): SourceBody {
  let destroyed = false;
  return {
    [Symbol.asyncIterator]: () => iterable[Symbol.asyncIterator](),
    on: () => undefined,
    destroy: () => {
      if (destroyed) return;
      destroyed = true;
      onDestroy();
    },
    get destroyed() {
      return destroyed;
    },
  };
}

/** What an adapter hands back once a range read is open at the source. */
export interface OpenedSource {
  /** The bytes of the range, in order. Null for an empty range (the version is still checked). */
  body: SourceBody | Readable | null;
  /** Runs after the last byte: lets the local adapter re-check the version after reading. */
  finish?: () => Promise<void>;
  /** Releases what open() took (a file descriptor); runs exactly once, on end or on error. */
  close?: () => Promise<void> | void;
}

export interface SourceStreamOptions {
  /** Bytes the range must deliver: fewer is SOURCE_TRUNCATED, more is SOURCE_ERROR. */
  expected: number;
  /** "s3://bucket/key" and the like, for error messages. */
  what: string;
  signal?: AbortSignal;
  /** Opens the range. Its signal aborts when the stream is destroyed or the caller aborts. */
  open: (signal: AbortSignal) => Promise<OpenedSource>;
  /**
   * Turns a backend error into a FanoutError (FanoutErrors pass through before this is called).
   * `received`: body bytes that had arrived (undefined before the body opened), so that a connection closed mid-body can be told
   * as SOURCE_TRUNCATED.
   */
  mapError: (err: unknown, received: number | undefined) => FanoutError;
  /** Until the first body byte (open included), and for progress while the body streams; 0 = none. */
  firstByteMs?: number;
  idleMs?: number;
}

/**
 * One Readable for every adapter, so the rules of Ufs.read live in one place: the source is
 * opened lazily (on the first read, so a stream nobody consumes holds no fd or socket), chunks
 * are passed through without copying under the consumer's backpressure, the byte count is
 * checked at the end, and an abort or destroy tears down the backend request at once.
 */
export function sourceStream(options: SourceStreamOptions): Readable {
  return new SourceStream(options);
}

class SourceStream extends Readable {
  private readonly opts: SourceStreamOptions;
  private readonly controller = new AbortController();
  private started = false;
  private wake: (() => void) | null = null;
  private opened: OpenedSource | null = null;
  private released = false;
  private ended = false;
  private readonly onAbort = () => this.destroy(abortError(this.opts.signal));

  constructor(opts: SourceStreamOptions) {
    // The consumer's highWaterMark only bounds how much we buffer; chunks keep the backend's size.
    super({ highWaterMark: 1024 * 1024 });
    this.opts = opts;
    if (opts.signal?.aborted) {
      this.destroy(abortError(opts.signal));
    } else {
      opts.signal?.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  override _read(): void {
    if (!this.started) {
      this.started = true;
      void this.pump();
    } else {
      const wake = this.wake;
      this.wake = null;
      wake?.();
    }
  }

  private async pump(): Promise<void> {
    const { expected, what } = this.opts;
    let received = 0;
    try {
      this.armFirstByte();
      this.opened = await this.opts.open(this.controller.signal);
      if (this.destroyed) {
        if (this.opened.body) destroyQuietly(this.opened.body);
        return void (await this.release());
      }
      const body = this.opened.body;
      if (body) {
        const chunks = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
        for (;;) {
          this.armIdle(expected - received);
          const next = await chunks.next();
          if (this.destroyed) return;
          if (next.done) break;
          const chunk = next.value;
          this.clearFirstByte();
          received += chunk.length;
          this.windowBytes += chunk.length;
          if (received > expected) {
            throw new FanoutError('SOURCE_ERROR', `${what}: the source sent more than the ${expected} bytes asked for`);
          }
          if (!this.push(chunk)) {
            // The consumer is slow, not the source: its time does not count against the source.
            this.disarmIdle();
            await new Promise<void>((resolve) => (this.wake = resolve));
          }
        }
      }
      this.clearTimers();
      if (this.destroyed) return;
      if (received < expected) {
        throw new FanoutError('SOURCE_TRUNCATED', `${what}: the source ended after ${received} of ${expected} bytes`);
      }
      await this.opened.finish?.();
      await this.release();
      this.ended = true;
      if (!this.destroyed) this.push(null);
    } catch (err) {
      this.clearTimers();
      if (this.destroyed) return;
      this.destroy(err instanceof FanoutError ? err : this.opts.mapError(err, this.opened ? received : undefined));
    }
  }

  private firstByteTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private windowBytes = 0;

  private armFirstByte(): void {
    const ms = this.opts.firstByteMs ?? 0;
    if (ms <= 0) return;
    this.firstByteTimer = setTimeout(() => this.destroy(timedOut(this.opts.what, 'firstByte', ms)), ms);
  }

  private clearFirstByte(): void {
    if (this.firstByteTimer) clearTimeout(this.firstByteTimer);
    this.firstByteTimer = undefined;
  }

  /** Starts an idle window unless one runs; each window must bring IDLE_PROGRESS_BYTES (or all that is left). */
  private armIdle(remaining: number): void {
    const ms = this.opts.idleMs ?? 0;
    if (ms <= 0 || this.idleTimer || this.firstByteTimer) return;
    this.windowBytes = 0;
    const need = Math.min(IDLE_PROGRESS_BYTES, remaining);
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.windowBytes >= need) return this.armIdle(remaining - this.windowBytes);
      this.destroy(timedOut(this.opts.what, 'idle', ms));
    }, ms);
  }

  private disarmIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private clearTimers(): void {
    this.clearFirstByte();
    this.disarmIdle();
  }

  private async release(): Promise<void> {
    if (this.released || !this.opened) return;
    this.released = true;
    this.opts.signal?.removeEventListener('abort', this.onAbort);
    await this.opened.close?.();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.opts.signal?.removeEventListener('abort', this.onAbort);
    this.clearTimers();
    // After a clean end there is nothing left to cancel at the backend.
    if (!this.ended) this.controller.abort(err ?? new FanoutError('ABORTED', 'stream destroyed'));
    const wake = this.wake;
    this.wake = null;
    wake?.();
    // Quietly: a destroyed undici or S3 body emits 'error' that no one would hear (process crash).
    if (this.opened?.body) destroyQuietly(this.opened.body);
    // An fd must be closed even when the consumer gives up early; close errors are not news then.
    Promise.resolve()
      .then(() => this.release())
      .catch(() => undefined)
      .then(() => callback(err));
  }
}
