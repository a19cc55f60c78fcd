import { abortError } from '../../core/errors.js';

interface Waiter {
  bytes: number;
  grant: () => void;
}

/**
 * Bytes in flight shared by many transfers (pages being fetched or waiting to be written): a
 * copy of thousands of files keeps dozens of them moving without its memory growing with the
 * page size × files × window. FIFO, so a big page is not starved by a stream of small ones; a
 * request larger than the whole budget is granted alone (it could never fit otherwise).
 */
export class ByteBudget {
  private used = 0;
  private readonly waiters: Waiter[] = [];

  constructor(readonly size: number) {}

  get inUse(): number {
    return this.used;
  }

  /** Waits until `bytes` fit; resolves with the release (idempotent). Rejects with ABORTED, holding nothing. */
  acquire(bytes: number, signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const want = Math.min(bytes, this.size);
    if (this.waiters.length === 0 && this.fits(want)) return Promise.resolve(this.take(want));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        bytes: want,
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.take(want));
        },
      };
      const onAbort = () => {
        const at = this.waiters.indexOf(waiter);
        if (at !== -1) this.waiters.splice(at, 1);
        reject(abortError(signal));
        this.wakeWaiters(); // the head may have been blocking smaller requests behind it
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** `bytes` at once if they fit now (and nobody waits), with their release; undefined otherwise. Never waits. */
  tryAcquire(bytes: number): (() => void) | undefined {
    const want = Math.min(bytes, this.size);
    return this.waiters.length === 0 && this.fits(want) ? this.take(want) : undefined;
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.size;
  }

  private take(bytes: number): () => void {
    this.used += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= bytes;
      this.wakeWaiters();
    };
  }

  private wakeWaiters(): void {
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) this.waiters.shift()!.grant();
  }
}
