import type { Clock } from '../../core/clock.js';
import type { Member } from '../../core/types.js';

export interface WorkerHealthOptions {
  /** How long a worker that failed (unreachable, timed out, bad checksum) is tried last. */
  downForMs?: number;
  /** Half-life of a worker's slowness score: one slow event demotes it for about this long. */
  slowHalfLifeMs?: number;
}

/** How many times longer a worker that missed a deadline stays last than one that refused. */
const DEADLINE_DOWN_FACTOR = 6;

interface Record {
  downUntil: number;
  slowScore: number;
  slowAt: number;
}

/**
 * What one reader has seen of each worker: failures put a worker last for a while, slowness
 * (a request that had to be hedged) demotes it behind the others for a time that grows with
 * repeated slowness and decays back. Bounded by the member count; unknown ids are healthy.
 */
export class WorkerHealth {
  private readonly records = new Map<string, Record>();
  private readonly downForMs: number;
  private readonly halfLifeMs: number;

  constructor(
    private readonly clock: Clock,
    options: WorkerHealthOptions = {},
  ) {
    this.downForMs = options.downForMs ?? 5_000;
    this.halfLifeMs = options.slowHalfLifeMs ?? 10_000;
  }

  /**
   * A worker that let a deadline pass (rather than refusing at once) stays last six times longer:
   * each retry of it costs a whole deadline.
   */
  failed(id: string, missedDeadline = false): void {
    this.record(id).downUntil = this.clock.now() + this.downForMs * (missedDeadline ? DEADLINE_DOWN_FACTOR : 1);
  }

  slow(id: string): void {
    const record = this.record(id);
    record.slowScore = this.score(record) + 1;
    record.slowAt = this.clock.now();
  }

  isDown(id: string): boolean {
    const record = this.records.get(id);
    return record !== undefined && record.downUntil > this.clock.now();
  }

  /** Down, or slow recently enough (score ≥ 0.5). */
  isDemoted(id: string): boolean {
    const record = this.records.get(id);
    return record !== undefined && (record.downUntil > this.clock.now() || this.score(record) >= 0.5);
  }

  /** Healthy workers in the given order, then slow ones (least slow first), then failed ones. */
  order(candidates: Member[]): Member[] {
    const healthy: Member[] = [];
    const slow: { member: Member; score: number }[] = [];
    const down: Member[] = [];
    for (const member of candidates) {
      const record = this.records.get(member.id);
      if (!record) healthy.push(member);
      else if (record.downUntil > this.clock.now()) down.push(member);
      else {
        const score = this.score(record);
        if (score >= 0.5) slow.push({ member, score });
        else healthy.push(member);
      }
    }
    slow.sort((a, b) => a.score - b.score);
    return [...healthy, ...slow.map((s) => s.member), ...down];
  }

  /** Forgets workers that left the cluster (keeps memory bounded by the membership). */
  retain(ids: Iterable<string>): void {
    const keep = new Set(ids);
    for (const id of this.records.keys()) if (!keep.has(id)) this.records.delete(id);
  }

  private score(record: Record): number {
    if (record.slowScore === 0) return 0;
    const elapsed = Math.max(0, this.clock.now() - record.slowAt);
    return record.slowScore * Math.pow(0.5, elapsed / this.halfLifeMs);
  }

  private record(id: string): Record {
    let record = this.records.get(id);
    if (!record) {
      record = { downUntil: 0, slowScore: 0, slowAt: 0 };
      this.records.set(id, record);
    }
    return record;
  }
}
