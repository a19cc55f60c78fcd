import type { Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';

/**
 * A bound on how long a reader in this process waits for the first byte of a page fill it joined
 * (its queue for a fill slot, the source's connect and first byte, the line's budget): what
 * `timeouts.peerFilling` bounds for a request's 102 "filling" answers. Made only for a wait on a
 * fill with no byte yet (a cold page), never for a stored page. `signal` aborts when the reader
 * leaves or the bound passes; arrived() ends the bound once a byte came.
 */
export class FirstByteWait {
  private readonly controller = new AbortController();
  private readonly timer = new AbortController();
  private readonly listening = new AbortController();
  expired = false;

  constructor(
    reader: AbortSignal,
    readonly ms: number,
    clock: Clock,
  ) {
    if (reader.aborted) this.controller.abort(reader.reason);
    else reader.addEventListener('abort', () => this.controller.abort(reader.reason), { once: true, signal: this.listening.signal });
    clock.sleep(ms, this.timer.signal).then(
      () => {
        this.expired = true;
        this.controller.abort();
      },
      () => {},
    );
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** A byte came (or the wait ended): the bound no longer applies; the reader's own signal still does. */
  arrived(): void {
    if (!this.timer.signal.aborted) this.timer.abort();
  }

  /** The wait is over, however: the timer and the reader's listener go. */
  end(): void {
    this.arrived();
    this.listening.abort();
  }

  /** The error a reader that waited out the bound gets: the worker unavailable for this page, as a peer that answered 102 for as long. */
  error(worker: string, what: string): FanoutError {
    return new FanoutError(
      'WORKER_UNAVAILABLE',
      `worker ${worker} had no byte of ${what} after ${this.ms} ms (queued for a fill slot of its mount, or waiting for the source's first byte; timeouts.peerFilling)`,
    );
  }
}
