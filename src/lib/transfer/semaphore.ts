import { FanoutError, abortError } from '../../core/errors.js';

interface Waiter {
  grant: () => void;
}

/**
 * Counts slots for work that holds memory (page buffers): callers wait in FIFO order for a
 * slot, so a burst of requests queues instead of growing the heap. A wait can be cancelled
 * (the client left): the waiter leaves the queue and no slot is ever taken for it, so a client
 * that goes away while queued cannot leak a slot.
 */
export class Semaphore {
  private available: number;
  private readonly waiters: Waiter[] = [];

  constructor(readonly size: number) {
    this.available = size;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** Slots held right now. */
  get held(): number {
    return this.size - this.available;
  }

  /** A slot now if one is free and nobody queues ahead (prefetch must not jump the queue). */
  tryAcquire(): (() => void) | undefined {
    if (this.available === 0 || this.waiters.length > 0) return undefined;
    this.available--;
    return this.releaser();
  }

  /** Waits for a slot; rejects with ABORTED (holding nothing) if `signal` aborts first. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.available > 0 && this.waiters.length === 0) {
      this.available--;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.releaser());
        },
      };
      const onAbort = () => {
        const at = this.waiters.indexOf(waiter);
        if (at !== -1) this.waiters.splice(at, 1);
        reject(abortError(signal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next.grant();
      else this.available++;
    };
  }
}
