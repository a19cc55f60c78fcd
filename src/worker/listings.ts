import type { Clock } from '../core/clock.js';
import { FanoutError, abortError } from '../core/errors.js';
import type { DirEntry } from '../core/types.js';
import { Semaphore } from '../lib/transfer/index.js';

/**
 * How long a listing may wait for a slot before it is answered OVERLOADED: a slot may be held by
 * a listing that runs for timeouts.sourceList (10 min), and a client is better told to retry
 * (elsewhere) than kept waiting for that. As long as a source's first-byte deadline.
 */
export const LISTING_QUEUE_MS = 30_000;

export interface SourceListingsOptions {
  /** Listings of the sources running at once on this worker (limits.sourceListings). */
  concurrent: number;
  /** Listings that may wait for one of them (limits.sourceListingsQueued); beyond: OVERLOADED. */
  queued: number;
  clock: Clock;
  queueMs?: number;
}

interface Flight {
  readonly controller: AbortController;
  readonly promise: Promise<DirEntry[]>;
  /** Requests waiting for it that may still leave. */
  waiters: number;
  /** A request without a signal waits for it (an internal caller): it is never aborted. */
  pinned: boolean;
}

/**
 * Source listings of one worker, each shared by every request asking for the same directory while
 * it runs, under a bound of its own. A listing is bounded in entries and time (the S3 source's
 * ListingBudget), but many at once were not: each held a source connection and up to its entries'
 * memory for up to 10 min. At most `concurrent` run; `queued` more wait at most LISTING_QUEUE_MS;
 * a request beyond that is answered OVERLOADED (503 with Retry-After) at once. A listing whose
 * every waiting request has gone (its clients gave up) is aborted: an S3 server handing out pages
 * for ever went on being listed for the full 10 min after the client left after 30 s.
 */
export class SourceListings {
  private readonly slots: Semaphore;
  private readonly flights = new Map<string, Flight>();

  constructor(private readonly options: SourceListingsOptions) {
    this.slots = new Semaphore(Math.max(1, options.concurrent));
  }

  /** Listings running and waiting for a slot (for tests and status). */
  get running(): number {
    return this.slots.held;
  }

  get waiting(): number {
    return this.slots.waiting;
  }

  /**
   * The listing of `key`: joins the one running, or starts `list` under a slot. `signal` is the
   * asking request's (its client left): it leaves the listing then, with ABORTED, and the last one
   * to leave aborts the listing itself (the signal `list` is given).
   */
  list(key: string, signal: AbortSignal | undefined, list: (signal: AbortSignal) => Promise<DirEntry[]>): Promise<DirEntry[]> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    let flight = this.flights.get(key);
    if (!flight || flight.controller.signal.aborted) {
      flight = this.start(key, list);
    }
    return this.wait(flight, signal);
  }

  private start(key: string, list: (signal: AbortSignal) => Promise<DirEntry[]>): Flight {
    const { concurrent, queued } = this.options;
    if (this.slots.held >= this.slots.size && this.slots.waiting >= queued) {
      throw new FanoutError('OVERLOADED', `${this.slots.held} source listings are running on this worker and ${this.slots.waiting} waiting (limits.sourceListings ${concurrent}, limits.sourceListingsQueued ${queued}); retry shortly`);
    }
    const controller = new AbortController();
    const flight: Flight = { controller, promise: this.run(controller.signal, list), waiters: 0, pinned: false };
    this.flights.set(key, flight);
    const forget = () => {
      if (this.flights.get(key) === flight) this.flights.delete(key);
    };
    flight.promise.then(forget, forget);
    return flight;
  }

  private async run(signal: AbortSignal, list: (signal: AbortSignal) => Promise<DirEntry[]>): Promise<DirEntry[]> {
    const release = await this.slot(signal);
    try {
      return await list(signal);
    } finally {
      release();
    }
  }

  /** A slot within the queue's deadline: OVERLOADED past it, ABORTED if every waiter left first. */
  private async slot(signal: AbortSignal): Promise<() => void> {
    const now = this.slots.tryAcquire();
    if (now) return now;
    const queueMs = this.options.queueMs ?? LISTING_QUEUE_MS;
    const waited = new AbortController();
    const stopTimer = new AbortController();
    void this.options.clock.sleep(queueMs, stopTimer.signal).then(
      () => waited.abort(new FanoutError('OVERLOADED', `waited ${queueMs} ms for one of the ${this.slots.size} source listings that may run at once on this worker (limits.sourceListings); retry shortly`)),
      () => {},
    );
    try {
      return await this.slots.acquire(AbortSignal.any([signal, waited.signal]));
    } catch (err) {
      throw waited.signal.aborted && !signal.aborted ? waited.signal.reason : err;
    } finally {
      stopTimer.abort();
    }
  }

  private wait(flight: Flight, signal: AbortSignal | undefined): Promise<DirEntry[]> {
    if (!signal) {
      flight.pinned = true;
      return flight.promise;
    }
    flight.waiters++;
    return new Promise((resolve, reject) => {
      const leave = () => {
        reject(abortError(signal));
        if (--flight.waiters === 0 && !flight.pinned) flight.controller.abort(new FanoutError('ABORTED', 'every request waiting for this listing has gone'));
      };
      signal.addEventListener('abort', leave, { once: true });
      flight.promise.then(
        (entries) => {
          signal.removeEventListener('abort', leave);
          resolve(entries);
        },
        (err: unknown) => {
          signal.removeEventListener('abort', leave);
          reject(err);
        },
      );
    });
  }
}
