import type { Clock } from '../core/clock.js';
import { TokenBucket } from '../lib/ratelimit/index.js';

/**
 * What this worker may read from its sources: each mount's cluster-wide budget divided by the
 * number of live members (so the whole cluster never exceeds it, however many clients pull),
 * and an optional cap for this worker across all mounts. Re-split whenever membership changes.
 */
export class SourceBudget {
  private readonly perMount = new Map<string, { budget: number; bucket: TokenBucket }>();
  private readonly workerBucket: TokenBucket;
  private members = 1;

  constructor(
    budgets: Record<string, number>,
    workerRate: number,
    private readonly clock: Clock,
  ) {
    for (const [mount, budget] of Object.entries(budgets)) {
      this.perMount.set(mount, { budget, bucket: new TokenBucket({ rate: budget, clock }) });
    }
    this.workerBucket = new TokenBucket({ rate: workerRate, clock });
  }

  /** Re-splits every mount's budget over `liveMembers` workers. */
  resplit(liveMembers: number): void {
    this.members = Math.max(1, liveMembers);
    for (const { budget, bucket } of this.perMount.values()) bucket.setRate(this.share(budget));
  }

  /** Waits until `bytes` more may be read from `mount`'s source. */
  async take(mount: string, bytes: number, signal?: AbortSignal): Promise<void> {
    const mountBucket = this.perMount.get(mount)?.bucket;
    if (mountBucket) await mountBucket.take(bytes, signal);
    await this.workerBucket.take(bytes, signal);
  }

  /** This worker's current rate per mount (bytes/s, 0 = unlimited), for status and metrics. */
  rates(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [mount, { budget }] of this.perMount) out[mount] = this.share(budget);
    return out;
  }

  get workerRate(): number {
    return this.workerBucket.rate;
  }

  private share(budget: number): number {
    return budget === 0 ? 0 : Math.floor(budget / this.members);
  }
}
