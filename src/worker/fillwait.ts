import { FanoutError } from '../core/errors.js';

/**
 * A bound on how long a reader in this process waits for the first byte of a page fill it joined
 * (its queue for a fill slot, the source's connect and first byte, the line's budget): what
 * `timeouts.peerFilling` bounds for a request's 102 "filling" answers. Made only for a wait on a
 * fill with no byte yet (a cold page), never for a stored page. `signal` aborts when the reader
 * leaves or the bound passes; arrived() ends the bound once a byte came, end() when the wait is over.
 *
 * A plain timer, not the injected clock's sleep: cancelling that sleep takes an abort(), and an
 * abort (an event dispatched) cost 8–11 µs, a signal-scoped listener 28 µs (measured, Node 20);
 * this wait costs about 1 µs when nothing aborts, which is every wait but the stuck ones.
 */
export class FirstByteWait {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private readonly readerLeft = () => this.controller.abort(this.reader.reason);
  expired = false;

  constructor(
    private readonly reader: AbortSignal,
    readonly ms: number,
  ) {
    if (reader.aborted) this.controller.abort(reader.reason);
    else reader.addEventListener('abort', this.readerLeft, { once: true });
    this.timer = setTimeout(() => {
      this.expired = true;
      this.controller.abort(new FanoutError('ABORTED', `no byte of the page after ${ms} ms`));
    }, ms);
    this.timer.unref();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** A byte came: the bound no longer applies; the reader's own signal still does. */
  arrived(): void {
    if (this.timer === undefined) return;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The wait is over, however: the timer and the reader's listener go. */
  end(): void {
    this.arrived();
    this.reader.removeEventListener('abort', this.readerLeft);
  }

  /** The error a reader that waited out the bound gets: the worker unavailable for this page, as a peer that answered 102 for as long. */
  error(worker: string, what: string): FanoutError {
    return new FanoutError(
      'WORKER_UNAVAILABLE',
      `worker ${worker} had no byte of ${what} after ${this.ms} ms (queued for a fill slot of its mount, or waiting for the source's first byte; timeouts.peerFilling)`,
    );
  }
}
