import type { Clock } from '../../core/clock.js';
import { abortError, FanoutError } from '../../core/errors.js';

/**
 * The mechanics the byte buckets share (TokenBucket here, the line's ClassBucket in lib/lines):
 * requests for n bytes that wait in a queue until the bucket admits them or their AbortSignal
 * fires, and the one timer that wakes the bucket when its head may go. What may go when (one
 * FIFO queue, or reads before preloads with a preload floor) is each bucket's own policy.
 */
export interface Waiter {
  readonly n: number;
  readonly signal: AbortSignal | undefined;
  resolve(): void;
  reject(err: unknown): void;
  onAbort: (() => void) | undefined;
}

/** The rejection of a request for `n` bytes that cannot wait (a bad size, an aborted signal), or undefined. */
export function refusal(n: number, signal: AbortSignal | undefined): Promise<void> | undefined {
  if (!Number.isFinite(n) || n < 0) return Promise.reject(new FanoutError('INVALID_ARGUMENT', `cannot take ${n} bytes`));
  if (signal?.aborted) return Promise.reject(abortError(signal));
  return undefined;
}

/**
 * A promise for `n` bytes, settled by admit() or by its signal: on abort `onCancel` is called
 * with the waiter (the bucket takes it out of its queue and calls cancelled()). `enqueue` puts
 * it in the bucket's queue at once.
 */
export function waitForBytes(n: number, signal: AbortSignal | undefined, enqueue: (w: Waiter) => void, onCancel: (w: Waiter) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const waiter: Waiter = { n, resolve, reject, signal, onAbort: undefined };
    if (signal) {
      waiter.onAbort = () => onCancel(waiter);
      signal.addEventListener('abort', waiter.onAbort, { once: true });
    }
    enqueue(waiter);
  });
}

/** The waiter may go: it stops listening to its signal and resolves. */
export function admit(waiter: Waiter): void {
  detach(waiter);
  waiter.resolve();
}

/** The waiter left the queue because its signal aborted: it rejects with ABORTED. */
export function cancelled(waiter: Waiter): void {
  detach(waiter);
  waiter.reject(abortError(waiter.signal));
}

function detach(waiter: Waiter): void {
  if (waiter.signal && waiter.onAbort) waiter.signal.removeEventListener('abort', waiter.onAbort);
}

/**
 * One pending wake-up at most: setting a new one replaces the old. A wake-up that was replaced
 * does nothing even if the clock's sleep ignores the abort (ManualClock).
 */
export class WakeTimer {
  private current: AbortController | undefined;

  constructor(private readonly clock: Clock) {}

  /** Calls `wake` in `ms` (rounded up to whole milliseconds, at least 1: waking a hair early would only set another). */
  set(ms: number, wake: () => void): void {
    this.clear();
    const controller = new AbortController();
    this.current = controller;
    this.clock.sleep(Math.max(1, Math.ceil(ms)), controller.signal).then(
      () => {
        if (this.current !== controller) return;
        this.current = undefined;
        wake();
      },
      () => undefined, // aborted: a newer set() owns the timer now
    );
  }

  clear(): void {
    this.current?.abort();
    this.current = undefined;
  }
}
