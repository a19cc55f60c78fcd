import { raceDeadline } from './deadlines.js';

/**
 * How many calls into local and network file system sources may run at once. Those calls share
 * libuv's thread pool with the page store's own disk work, and a hung NFS server blocks each
 * call's thread until it answers, which may be never: without a cap, a few requests to a hung
 * mount would take every thread, and the worker would stop serving even cached pages of other
 * mounts. Two levels: all sources together may take three quarters of the pool (a worker's pool
 * has 16 threads unless UV_THREADPOOL_SIZE says otherwise: bin/fanout.js), one source three
 * quarters of that, so one hung file system leaves threads to the page store and to the other
 * mounts. A slot is given back only when its call really returns; a call that waits for a slot
 * past its deadline fails as the source's timeout (SOURCE_ERROR). Why a worker's pool is larger
 * than libuv's 4: capped at 3 of 4, benchmark 5's cold rate fell by a quarter (docs/benchmarks.md).
 */
export class FsGate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  /** `shared`: a gate each slot of this one must also hold one of (the process's, for one source's). */
  constructor(
    readonly limit: number,
    private readonly shared?: FsGate,
  ) {}

  /** A gate for one source under this one: three quarters of its slots. */
  child(): FsGate {
    return new FsGate(threeQuarters(this.limit), this);
  }

  /** Runs `call` in a slot, answering within `ms` (the slot stays taken until the call returns). */
  async run<T>(what: string, ms: number, signal: AbortSignal | undefined, call: () => Promise<T>): Promise<T> {
    const release = await this.acquire(what, ms, signal);
    const work = call();
    work.then(release, release);
    return raceDeadline(work, ms, what, signal);
  }

  /** A slot here and in the shared gate, waited for at most `ms` in all; the function returned gives them back (once). */
  async acquire(what: string, ms: number, signal?: AbortSignal): Promise<() => void> {
    const until = Date.now() + ms;
    const own = await this.take(what, ms, signal);
    if (!this.shared) return own;
    try {
      // At least 1 ms: raceDeadline reads 0 as no deadline.
      const shared = await this.shared.acquire(what, ms > 0 ? Math.max(1, until - Date.now()) : 0, signal);
      return () => {
        shared();
        own();
      };
    } catch (err) {
      own();
      throw err;
    }
  }

  private async take(what: string, ms: number, signal?: AbortSignal): Promise<() => void> {
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

/** Three quarters of `n`, a quarter (at least 1) kept back; never less than 1. */
function threeQuarters(n: number): number {
  return Math.max(1, n - Math.max(1, Math.floor(n / 4)));
}

/** The thread pool's size as libuv reads it at its first use. */
function threadPoolSize(): number {
  const size = Number(process.env.UV_THREADPOOL_SIZE);
  return Number.isInteger(size) && size > 0 ? Math.min(size, 1024) : 4;
}

/** Source calls at once, all sources together: the pool less a quarter of it kept for the page store. */
export const sourceCallLimit = threeQuarters;

/** The gate of all this process's local sources (they share one thread pool); each source takes a child(). */
export const sourceFsGate = new FsGate(sourceCallLimit(threadPoolSize()));
