/**
 * Bytes a body must bring in each idleMs window once its head has arrived, unless its reader held
 * it (queue past its high-water mark) during the window. Restarting the deadline on every chunk
 * let a peer sending one byte every 20 s hold a page read for ever; this floor (about 1 KiB/s at
 * the default 30 s) bounds a 4 MiB page at about an hour. Half of a source's floor
 * (ufs/deadlines.ts IDLE_PROGRESS_BYTES): a worker streaming a slow but acceptable source to us
 * passes it on without tripping ours.
 */
export const WINDOW_PROGRESS_BYTES = 32 * 1024;

/**
 * The progress floor of one response body, whatever client reads it: the lean connection and
 * the undici transport's interceptor (cluster/undicifloor.ts) tell it what arrived and when the
 * reader held the body; it says why, once a window brought too little. One timer per window,
 * not one refreshed per chunk.
 */
export class ProgressWindow {
  private timer: NodeJS.Timeout | undefined;
  /** Bytes of the current window, and whether the reader held the body (reads paused) in it. */
  private bytes = 0;
  private held = false;
  private paused = false;

  constructor(
    private readonly idleMs: number,
    private readonly tooSlow: (why: string) => void,
  ) {}

  /** Opens the first window (the head has arrived). */
  start(): void {
    this.bytes = 0;
    this.held = this.paused;
    this.timer = setTimeout(() => this.close(), this.idleMs);
  }

  /** Body bytes arrived (as read from the connection, before the reader takes them). */
  arrived(bytes: number): void {
    this.bytes += bytes;
  }

  /** The reader's queue is full: reads stop, and this window does not count against the sender. */
  pause(): void {
    this.paused = this.held = true;
  }

  resume(): void {
    this.paused = false;
  }

  /** The body ended or was given up. */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private close(): void {
    if (this.held || this.bytes >= WINDOW_PROGRESS_BYTES) return this.start();
    this.timer = undefined;
    this.tooSlow(this.bytes === 0 ? `the body stalled for ${this.idleMs} ms` : `the body crawled: ${this.bytes} bytes in ${this.idleMs} ms, under the floor of ${WINDOW_PROGRESS_BYTES}`);
  }
}
