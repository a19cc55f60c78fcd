import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Clock } from '../../core/clock.js';

/**
 * Gives back the memory of page buffers that became garbage while nothing else allocates.
 *
 * Page buffers (4 MiB, outside the JS heap) that no pool keeps are freed only by a collection of
 * the JS heap, and V8 starts one for outside memory only when more is allocated (about 64 MiB
 * past the last collection). A worker that just served a burst of /v1/data or S3 readers and
 * then sends hits by the kernel allocates almost nothing, so that garbage stayed resident:
 * measured 396–424 MiB RSS with stalled /v1/page readers after a /v1/data scenario, of which
 * ~290 MiB were unreferenced ArrayBuffers (160 MiB after one full collection).
 *
 * Every `everyMs` this looks at V8's external memory (ArrayBuffers, as `process.memoryUsage()`'s
 * `external`) and runs one full collection
 * when either
 * - it grew more than `slackBytes` past what the last collection left (a burst of buffers), or
 * - it is above `floorBytes` and no collection ran for a while: buffers still in use at the last
 *   collection (responses holding pages) may have become garbage since without the figure moving.
 *   That wait starts at 5 s and doubles (to 10 s) each time such a collection frees less than
 *   `slackBytes`, so an idle worker whose pools are full is not collected over and over.
 * V8 frees the buffers of a collection on a background task: what it left is read at the next check.
 */
export interface ReclaimOptions {
  clock: Clock;
  everyMs?: number;
  slackBytes?: number;
  floorBytes?: number;
  /** Measures outside-heap buffer bytes (tests); process.memoryUsage().arrayBuffers by default. */
  measure?: () => number;
  /** Runs a full collection (tests); V8's gc() by default. */
  collect?: () => void;
}

export const RECLAIM_EVERY_MS = 500;
export const RECLAIM_SLACK_BYTES = 32 * 1024 * 1024;
export const RECLAIM_FLOOR_BYTES = 64 * 1024 * 1024;
const QUIET_FIRST_MS = 5_000;
// Garbage left by a burst lingers at most this long; an idle worker whose pools hold more than
// the floor pays one collection (a few ms for this heap) this often.
const QUIET_MAX_MS = 10_000;

export class BufferReclaimer {
  private readonly measure: () => number;
  private readonly collect: () => void;
  private readonly slack: number;
  private readonly floor: number;
  /** What the last collection left (or the lowest seen since): growth is counted from here. */
  private live: number;
  /** The figure when the last collection ran, until what it freed is known (next check). */
  private collectedAt: number | undefined;
  private lastCollection: number;
  private quietMs = QUIET_FIRST_MS;
  private forQuiet = false;
  /** Collections run so far (tests, logs). */
  collections = 0;

  constructor(private readonly options: ReclaimOptions) {
    // V8's external memory (ArrayBuffers and the little else it counts) without the RSS read of
    // process.memoryUsage(), which took 2% of a loaded worker's CPU at two calls a second.
    this.measure = options.measure ?? (() => getHeapStatistics().external_memory);
    this.collect = options.collect ?? fullCollection();
    this.slack = options.slackBytes ?? RECLAIM_SLACK_BYTES;
    this.floor = options.floorBytes ?? RECLAIM_FLOOR_BYTES;
    this.live = this.measure();
    this.lastCollection = options.clock.now();
  }

  /** One check: collects when a rule above says so; returns whether it did. */
  check(): boolean {
    const now = this.measure();
    if (this.collectedAt !== undefined) {
      // Only a collection run for quiet time backs off: one run for growth says nothing of what
      // the responses of that burst will let go later.
      const freed = this.collectedAt - now;
      if (freed >= this.slack) this.quietMs = QUIET_FIRST_MS;
      else if (this.forQuiet) this.quietMs = Math.min(QUIET_MAX_MS, this.quietMs * 2);
      this.collectedAt = undefined;
      this.live = now;
      return false;
    }
    this.live = Math.min(this.live, now);
    const grew = now > this.live + this.slack;
    const quietFor = this.options.clock.now() - this.lastCollection;
    if (!grew && !(now > this.floor && quietFor >= this.quietMs)) return false;
    if (grew) this.quietMs = QUIET_FIRST_MS;
    this.forQuiet = !grew;
    this.collect();
    this.collections++;
    this.collectedAt = now;
    this.lastCollection = this.options.clock.now();
    return true;
  }

  /** Checks every `everyMs` until `signal` aborts (the worker's stop). */
  async run(signal: AbortSignal): Promise<void> {
    const every = this.options.everyMs ?? RECLAIM_EVERY_MS;
    while (!signal.aborted) {
      try {
        await this.options.clock.sleep(every, signal);
      } catch {
        return; // stopped
      }
      if (signal.aborted) return; // a clock that does not watch the signal
      this.check();
    }
  }
}

let gc: (() => void) | undefined;

/**
 * V8's gc(), without starting node with --expose-gc (the worker is started by the CLI, by npm,
 * by test harnesses: a node flag would have to be passed by all of them). The flag only installs
 * the function on contexts created after it is set, hence the fresh context.
 */
function fullCollection(): () => void {
  if (gc) return gc;
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return (gc = existing);
  setFlagsFromString('--expose-gc');
  gc = runInNewContext('gc') as () => void;
  return gc;
}
