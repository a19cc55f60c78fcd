import type { Writable } from 'node:stream';
import type { Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import { BufferPool } from '../lib/pagestore/index.js';

/** Bytes copied per write: small enough that a slow reader's progress shows up often. */
const SLICE = 64 * 1024;
/**
 * Slice buffers are reused once their write completed: copies that became garbage after every
 * write grew the heap by hundreds of MB under many readers before the collector caught up.
 */
const slices = new BufferPool(SLICE, 512);
/** Slices handed to callers that write them themselves (the S3 gateway), until they say so. */
const lentSlices = new WeakMap<Buffer, Buffer>();

/** A pooled copy of `data[from, from + SLICE)`; give it back with returnSlice() once written. */
export function copySlice(data: Buffer, from: number, to: number): Buffer {
  const end = Math.min(to, from + SLICE);
  const slice = slices.acquire();
  data.copy(slice, 0, from, end);
  const view = end - from === SLICE ? slice : slice.subarray(0, end - from);
  lentSlices.set(view, slice);
  return view;
}

/** Takes back a slice from copySlice(); false if `chunk` is not one. */
export function returnSlice(chunk: Buffer): boolean {
  const slice = lentSlices.get(chunk);
  if (!slice) return false;
  lentSlices.delete(chunk);
  slices.release(slice);
  return true;
}

export interface FlowOptions {
  clock: Clock;
  /** A response that gets no byte to its client for this long is destroyed (its memory freed). */
  idleMs: number;
  /** Bytes a response may have queued in user space before the writer waits for the client. */
  allowance: number;
}

/**
 * Writes a response body as copies of page slices, never queueing more than `allowance` bytes
 * for a client: however slowly a client reads, it holds at most that much of this worker's
 * memory plus what the kernel takes, and the page buffers the copies came from can go back to
 * their pool (or to another request) at once. A client that takes nothing for `idleMs` is cut.
 */
/** What a flow whose response finished reports if written to again. */
const CLOSED = new FanoutError('ABORTED', 'response already finished');
/** Why a flow's idle timer is stopped (its response closed): never shown to anyone. */
const SETTLED = new Error('settled');

export class ResponseFlow {
  private readonly waiters = new Set<{ resolve: () => void; reject: (err: FanoutError) => void }>();
  /** When the current wait began, or the client last took bytes (the idle deadline counts from there). */
  private idleSince = 0;
  /** The idle timer while it runs (see armWatchdog). */
  private watchdog: AbortController | undefined;
  private closed: FanoutError | undefined;
  /** Unpins of shared writes not yet reported done (see writeShared). */
  private readonly pinned = new Set<() => void>();

  constructor(
    private readonly res: Writable,
    private readonly options: FlowOptions,
  ) {
    // A finished response has nobody waiting: no error (and no stack capture) per request.
    res.once('close', () => {
      // The socket is done with every view by now (all written, or the socket closed): a write
      // whose callback never comes must not keep its buffer from being reused.
      for (const unpin of this.pinned) unpin();
      this.pinned.clear();
      this.watchdog?.abort(SETTLED);
      if (res.writableFinished && this.waiters.size === 0) this.closed ??= CLOSED;
      else this.fail(new FanoutError('ABORTED', 'client went away'));
    });
  }

  /** The flow's clock time (for how long a response has held a page). */
  now(): number {
    return this.options.clock.now();
  }

  /** The response or its socket is destroyed ('close' may not have been emitted yet). */
  private get gone(): boolean {
    return this.res.destroyed || (this.res as { socket?: { destroyed?: boolean } | null }).socket?.destroyed === true;
  }

  /** True when the client must take some bytes before more are queued. */
  get full(): boolean {
    return this.res.writableLength >= this.options.allowance;
  }

  /** Queues copies of `data[from, to)` up to the allowance; returns where it stopped. */
  write(data: Buffer, from: number, to: number): number {
    let at = from;
    while (at < to && !this.full && !this.closed && !this.gone) {
      const end = Math.min(to, at + SLICE);
      const slice = slices.acquire();
      data.copy(slice, 0, at, end);
      // The callback runs once the socket is done with the slice (written, or failed): only then is it reused.
      this.res.write(end - at === SLICE ? slice : slice.subarray(0, end - at), (err) => {
        slices.release(slice);
        // A write that failed, or "succeeded" on a socket already destroyed (node:http reports
        // queued writes done without error after a reset, before 'close'), is no progress. Taken
        // as progress, every stalled response of 50 clients that left at once read its next page
        // again before its 'close' arrived (measured: +136 MiB of page buffers, RSS 282 → 410 MiB).
        if (err || this.gone) this.fail(new FanoutError('ABORTED', `client went away${err ? `: ${err.message}` : ''}`));
        else this.progress();
      });
      at = end;
    }
    return at;
  }

  /**
   * Queues `data[from, to)` itself, not copies of it, up to the allowance; returns where it
   * stopped. For a buffer shared by many responses (a fill streamed to its waiters): the same
   * bytes go to every socket with no copy in JS. `pin` is called per write and its result once
   * the socket is done with the view (written, or failed): the buffer must not be reused before.
   */
  writeShared(data: Buffer, from: number, to: number, pin: () => () => void): number {
    let at = from;
    while (at < to && !this.full && !this.closed && !this.gone) {
      // One write for what fits: a waiter that is behind catches up in one syscall, not per 64 KiB.
      const end = Math.min(to, at + Math.max(SLICE, this.options.allowance - this.res.writableLength));
      const unpin = pin();
      this.pinned.add(unpin);
      this.res.write(data.subarray(at, end), (err) => {
        this.pinned.delete(unpin);
        unpin();
        if (err || this.gone) this.fail(new FanoutError('ABORTED', `client went away${err ? `: ${err.message}` : ''}`));
        else this.progress();
      });
      at = end;
    }
    return at;
  }

  /** Resolves once the client has taken some bytes; destroys the response if it takes none for idleMs. */
  async room(): Promise<void> {
    // A gone client has no room: callers that loop on write() and room() must stop, not spin.
    while (true) {
      if (this.gone) this.fail(new FanoutError('ABORTED', 'client went away'));
      if (this.closed) throw this.closed;
      if (!this.full) return;
      await this.nextProgress();
    }
  }

  private nextProgress(): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    if (this.waiters.size === 0) this.idleSince = this.options.clock.now();
    this.armWatchdog();
    return new Promise((resolve, reject) => this.waiters.add({ resolve, reject }));
  }

  /**
   * One idle timer per flow, not one (with its AbortController) per wait: a cold page's waiters
   * wait for room after nearly every write, and those made 3% of a worker's CPU in the cold lab.
   * It wakes every idleMs at most while someone waits, and cuts the client once nothing was
   * taken for idleMs since the wait began or the last progress.
   */
  private armWatchdog(): void {
    if (this.watchdog) return;
    const stop = (this.watchdog = new AbortController());
    void (async () => {
      let wait = this.options.idleMs;
      while (!stop.signal.aborted) {
        await this.options.clock.sleep(wait, stop.signal).catch(() => {});
        if (stop.signal.aborted || this.closed || this.waiters.size === 0) break;
        const idle = this.options.clock.now() - this.idleSince;
        if (idle >= this.options.idleMs) {
          const err = new FanoutError('ABORTED', `client took no bytes for ${this.options.idleMs} ms`);
          this.res.destroy();
          this.fail(err);
          break;
        }
        wait = this.options.idleMs - idle;
      }
      if (this.watchdog === stop) this.watchdog = undefined;
    })();
  }

  private progress(): void {
    this.idleSince = this.options.clock.now();
    for (const waiter of this.waiters) waiter.resolve();
    this.waiters.clear();
  }

  private fail(err: FanoutError): void {
    this.closed ??= err;
    for (const waiter of this.waiters) waiter.reject(this.closed);
    this.waiters.clear();
  }
}
