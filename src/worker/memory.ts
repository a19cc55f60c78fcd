import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Clock } from '../core/clock.js';

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
 * Every `everyMs` this looks at `process.memoryUsage().arrayBuffers`; when it has grown more than
 * `slackBytes` past what the last collection left live, it runs one full collection. Memory
 * that is really in use is not collected, and the baseline moves to it, so a busy worker pays at
 * most one collection per `slackBytes` of new buffers (V8 would run one per 64 MiB anyway); an
 * idle one pays nothing.
 */
export interface ReclaimOptions {
  clock: Clock;
  everyMs?: number;
  slackBytes?: number;
  /** Measures outside-heap buffer bytes (tests); process.memoryUsage().arrayBuffers by default. */
  measure?: () => number;
  /** Runs a full collection (tests); V8's gc() by default. */
  collect?: () => void;
}

export const RECLAIM_EVERY_MS = 1000;
export const RECLAIM_SLACK_BYTES = 32 * 1024 * 1024;

export class BufferReclaimer {
  private baseline: number;
  private readonly measure: () => number;
  private readonly collect: () => void;
  private readonly slack: number;
  /** Collections run so far (status, tests). */
  collections = 0;

  constructor(private readonly options: ReclaimOptions) {
    this.measure = options.measure ?? (() => process.memoryUsage().arrayBuffers);
    this.collect = options.collect ?? fullCollection();
    this.slack = options.slackBytes ?? RECLAIM_SLACK_BYTES;
    this.baseline = this.measure();
  }

  /** One check: collects if buffers grew past the slack; returns whether it did. */
  check(): boolean {
    const now = this.measure();
    if (now <= this.baseline + this.slack) {
      // Freed without us (V8's own collection, buffers pooled again): follow it down.
      this.baseline = Math.min(this.baseline, now);
      return false;
    }
    this.collect();
    this.collections++;
    this.baseline = this.measure();
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
