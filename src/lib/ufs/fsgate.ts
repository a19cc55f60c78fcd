import { abortError } from '../../core/errors.js';
import { timedOut } from './deadlines.js';

/**
 * `work`, or its deadline or the caller's abort, whichever comes first. A call that loses goes on
 * in its pool thread (a hung network file system cannot be cancelled) and its result is dropped.
 */
export function raceDeadline<T>(work: Promise<T>, ms: number, what: string, signal?: AbortSignal): Promise<T> {
  if (signal?.aborted) {
    work.catch(() => {});
    return Promise.reject(abortError(signal));
  }
  if (ms <= 0 && !signal) return work;
  return new Promise<T>((resolve, reject) => {
    const timer = ms > 0 ? setTimeout(() => settle(() => reject(timedOut(what, 'firstByte', ms))), ms) : undefined;
    const onAbort = () => settle(() => reject(abortError(signal)));
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => settle(() => resolve(value)),
      (err) => settle(() => reject(err)),
    );
  });
}

/**
 * How many calls into local and network file system sources may run at once. Those calls share
 * libuv's thread pool (UV_THREADPOOL_SIZE, 4 by default) with the page store's own disk work,
 * and a hung NFS server blocks each call's thread until it answers, which may be never: without a
 * cap, a few requests to a hung mount would take every thread, and the worker would stop serving
 * even cached pages of other mounts. All but one thread may run source calls; a slot is given
 * back only when its call really returns, and a call that waits for a slot past its deadline
 * fails as the source's timeout (SOURCE_ERROR).
 */
export class FsGate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly limit: number) {}

  /** Runs `call` in a slot, answering within `ms` (the slot stays taken until the call returns). */
  async run<T>(what: string, ms: number, signal: AbortSignal | undefined, call: () => Promise<T>): Promise<T> {
    const release = await this.acquire(what, ms, signal);
    const work = call();
    work.then(release, release);
    return raceDeadline(work, ms, what, signal);
  }

  /** A slot, waited for at most `ms`; the function returned gives it back (once). */
  async acquire(what: string, ms: number, signal?: AbortSignal): Promise<() => void> {
    if (this.running >= this.limit) {
      let wake!: () => void;
      const turn = new Promise<void>((resolve) => (wake = resolve));
      this.waiting.push(wake);
      try {
        await raceDeadline(turn, ms, `${what} (every source thread is busy: a file system not answering?)`, signal);
      } catch (err) {
        const at = this.waiting.indexOf(wake);
        if (at >= 0) this.waiting.splice(at, 1);
        else this.handOn(); // woken as the deadline fired: the slot goes to the next
        throw err;
      }
    } else this.running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.handOn();
    };
  }

  /** A slot is free: to the first waiter (which takes it over as it is), else back to the count. */
  private handOn(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }
}

/** The thread pool's size as libuv reads it at its first use. */
function threadPoolSize(): number {
  const size = Number(process.env.UV_THREADPOOL_SIZE);
  return Number.isInteger(size) && size > 0 ? Math.min(size, 1024) : 4;
}

/** The one gate of this process's local sources (they share one thread pool). */
export const sourceFsGate = new FsGate(Math.max(1, threadPoolSize() - 1));
