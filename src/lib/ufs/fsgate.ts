import { raceDeadline } from './deadlines.js';

/** Runs a call into a source in a slot of the pool's threads (FsGate, TurnBatches). */
export interface SourceCalls {
  run<T>(what: string, ms: number, signal: AbortSignal | undefined, call: () => Promise<T>): Promise<T>;
}

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
export class FsGate implements SourceCalls {
  private running = 0;
  /** In arrival order: a waiter is woken once its weight fits, never passed by a later one. */
  private readonly waiting: { weight: number; wake: () => void }[] = [];

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

  /**
   * `weight` slots (at most the limit) here and in the shared gate, waited for at most `ms` in
   * all; the function returned gives them back (once).
   */
  async acquire(what: string, ms: number, signal?: AbortSignal, weight = 1): Promise<() => void> {
    const until = performance.now() + ms;
    const own = await this.take(what, ms, signal, weight);
    if (!this.shared) return own;
    try {
      // At least 1 ms: raceDeadline reads 0 as no deadline.
      const shared = await this.shared.acquire(what, ms > 0 ? Math.max(1, until - performance.now()) : 0, signal, weight);
      return () => {
        shared();
        own();
      };
    } catch (err) {
      own();
      throw err;
    }
  }

  private async take(what: string, ms: number, signal: AbortSignal | undefined, asked: number): Promise<() => void> {
    const weight = Math.min(asked, this.limit);
    if (this.waiting.length > 0 || this.running + weight > this.limit) {
      let wake!: () => void;
      const waiter = { weight, wake: () => wake() };
      const turn = new Promise<void>((resolve) => (wake = resolve));
      this.waiting.push(waiter);
      try {
        await raceDeadline(turn, ms, `${what} (every source thread is busy: a file system not answering?)`, signal);
      } catch (err) {
        const at = this.waiting.indexOf(waiter);
        if (at >= 0) {
          this.waiting.splice(at, 1);
          this.wakeWhoFits(); // a heavier waiter ahead gone may let lighter ones in
        } else this.giveBack(weight); // woken as the deadline fired: the slots go on
        throw err;
      }
    } else this.running += weight;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.giveBack(weight);
    };
  }

  private giveBack(weight: number): void {
    this.running -= weight;
    this.wakeWhoFits();
  }

  /** Slots go to the waiters at the head of the queue, as long as theirs fit. */
  private wakeWhoFits(): void {
    while (this.waiting.length > 0 && this.running + this.waiting[0]!.weight <= this.limit) {
      const next = this.waiting.shift()!;
      this.running += next.weight;
      next.wake();
    }
  }
}

/**
 * Calls that reach the pool together: smallio's jobs asked for in one turn of the event loop go
 * to the pool at its end, spread over at most `threads` pool threads. The calls that start while a
 * batch is open share its `threads` slots, taken once and given back when the batch's last call
 * returns: a slot per call would cut each turn's jobs to the gate's size and wake a thread for every
 * few of them (benchmark 5's cold rate, docs/benchmarks.md).
 */
export class TurnBatches implements SourceCalls {
  private open: Batch | undefined;

  constructor(
    private readonly gate: FsGate,
    private readonly threads: number,
  ) {}

  async run<T>(what: string, ms: number, signal: AbortSignal | undefined, call: () => Promise<T>): Promise<T> {
    const batch = this.open ?? this.openBatch(what, ms);
    batch.pending++;
    try {
      await raceDeadline(batch.slots, ms, what, signal);
    } catch (err) {
      leave(batch);
      throw err;
    }
    const work = call();
    work.then(
      () => leave(batch),
      () => leave(batch),
    );
    return raceDeadline(work, ms, what, signal);
  }

  private openBatch(what: string, ms: number): Batch {
    // No caller's signal: one leaving does not take the slots from the others.
    const batch: Batch = { slots: this.gate.acquire(what, ms, undefined, this.threads), pending: 0 };
    this.open = batch;
    batch.slots.then(
      (release) => {
        if (this.open === batch) this.open = undefined;
        batch.release = release;
        if (batch.pending === 0) release();
      },
      () => {
        if (this.open === batch) this.open = undefined;
      },
    );
    return batch;
  }
}

interface Batch {
  slots: Promise<() => void>;
  /** Calls that joined and have not returned (or left). */
  pending: number;
  release?: () => void;
}

function leave(batch: Batch): void {
  if (--batch.pending === 0) batch.release?.();
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
