import type { Clock } from '../../core/clock.js';
import { allocateLine, type ClassDemand, type Share } from './allocate.js';

/** What a worker sends its line's coordinator every renewal. */
export interface LeaseRequest {
  member: string;
  /** Increases with every request of this worker process; older (overtaken) requests are refused. */
  seq: number;
  /** A new number each time the worker process starts, so its seq may start again from 1. */
  epoch: string;
  demand: ClassDemand;
  /** The rate the worker applies now (its last grant, its fallback share, or 0 before any). */
  applied: number;
  /** The line's rate in the asking worker's config (absent from workers of older builds). */
  rate?: number;
}

/** The answer: apply `rate` (of which `preloadMin` for preloads) for `leaseMs` after receiving it. */
export interface LeaseGrant extends Share {
  leaseMs: number;
  /**
   * The rate the coordinator holds the whole line to: the least of its own and those its members
   * are configured with (absent from coordinators of older builds). A member falls back to its
   * share of this one when its lease lapses.
   */
  lineRate?: number;
}

export interface CoordinatorOptions {
  rate: number;
  preloadFloor: number;
  leaseMs: number;
  /** A member not heard from for this long may be on its fallback share (rate ÷ members). */
  silentMs: number;
  clock: Clock;
}

interface Record {
  epoch: string;
  seq: number;
  demand: ClassDemand;
  applied: number;
  /** The line's rate in the member's config, if it said. */
  configured: number | undefined;
  /** The last grant sent: the member applies it from when the answer arrives. */
  granted: number;
  heardAt: number;
}

/**
 * Grants one line's rate as short leases so that what the members apply never adds up to more
 * than the rate, while shares move to whoever has requests waiting.
 *
 * A member may be applying, at any moment, the rate it reported (until its grant arrives) or the
 * grant just sent; so each other member counts as the larger of the two. A member silent for a
 * while may have fallen back to rate ÷ members (its lease ran out), so it counts as at least that.
 * A member is lowered at once (that is always safe) and raised only into headroom that is free
 * under that accounting; it may always keep what it applies now, which changes no total. So a
 * share moves in two renewals: the holder is lowered at its renewal, the asker raised at its
 * next one. For one lease after this worker became coordinator (the ring moved, or the cluster
 * started), members it has not heard from yet may still hold grants of a previous coordinator:
 * they count as the whole rate, so nobody is raised until they have reported or their leases
 * have run out.
 */
export class LineCoordinator {
  private readonly records = new Map<string, Record>();
  /** When this coordinator started, or started again after a gap (see renew). */
  private since: number;
  private lastAnswer: number;

  constructor(private readonly opts: CoordinatorOptions) {
    this.since = this.lastAnswer = opts.clock.now();
  }

  /** Answers one renewal; undefined for a request overtaken by a newer one of the same member. */
  renew(req: LeaseRequest, ring: readonly string[]): LeaseGrant | undefined {
    const { preloadFloor, leaseMs, clock } = this.opts;
    const now = clock.now();
    // Members renew every 250 ms, this worker's own lease too: a coordinator that answered nothing
    // for a lease was paused (SIGSTOP, a frozen VM) and may have left the ring meanwhile, another
    // worker coordinating the line. Its members' silence then says nothing of what they apply
    // (the other's grants, up to the whole rate), so it starts again as a new coordinator. Before,
    // it took them for lapsed (their fallback share): measured in a unit test, a resumed
    // coordinator granted itself a third of the line while a member held all of it.
    if (now - this.lastAnswer > leaseMs) {
      this.records.clear();
      this.since = now;
    }
    this.lastAnswer = now;
    const known = this.records.get(req.member);
    if (known && known.epoch === req.epoch && req.seq <= known.seq) return undefined;
    const configured = req.rate !== undefined && Number.isFinite(req.rate) && req.rate > 0 ? req.rate : undefined;
    const record: Record = { epoch: req.epoch, seq: req.seq, demand: req.demand, applied: req.applied, configured, granted: known?.granted ?? 0, heardAt: now };
    // A new process of the member starts from what it reports: its old grant died with it.
    if (known && known.epoch !== req.epoch) record.granted = 0;
    this.records.set(req.member, record);
    const members = ring.includes(req.member) ? ring : [...ring, req.member];
    for (const id of this.records.keys()) if (!members.includes(id)) this.records.delete(id);

    const rate = this.lineRate();
    const fallback = rate / members.length;
    const heard = new Map<string, ClassDemand>();
    let reserved = 0;
    for (const id of members) {
      const r = this.records.get(id);
      if (r && now - r.heardAt <= this.opts.silentMs) heard.set(id, r.demand);
      else reserved += fallback; // silent: it may be on its fallback share, which stays its own
    }
    const target = allocateLine(Math.max(0, rate - reserved), Math.min(preloadFloor, rate - reserved), heard).get(req.member)!;

    let othersHold = 0;
    for (const id of members) {
      if (id === req.member) continue;
      othersHold += this.holds(id, now, rate, fallback);
    }
    const headroom = Math.max(0, rate - othersHold);
    const granted = Math.min(target.rate, Math.max(Math.min(req.applied, rate), headroom));
    record.granted = granted;
    return { rate: granted, preloadMin: Math.min(target.preloadMin, granted), leaseMs, lineRate: rate };
  }

  /**
   * The rate the whole line is held to: the least of this worker's and its members' configured
   * rates. Configs that disagree (a change rolled out to some workers, a typo) then never let the
   * cluster read more across the line than any of its workers was told it may; before, the
   * coordinator's own rate ruled, so a larger one there raised the whole cluster's total.
   */
  lineRate(): number {
    let rate = this.opts.rate;
    for (const r of this.records.values()) if (r.configured !== undefined && r.configured < rate) rate = r.configured;
    return rate;
  }

  /** Members whose configured rate for the line differs from this worker's (id → their rate), for the log. */
  differing(): Map<string, number> {
    return new Map([...this.records].filter(([, r]) => r.configured !== undefined && r.configured !== this.opts.rate).map(([id, r]) => [id, r.configured!]));
  }

  /** The most member `id` may be applying now, as far as this coordinator can tell. */
  private holds(id: string, now: number, rate: number, fallback: number): number {
    const { leaseMs, silentMs } = this.opts;
    const r = this.records.get(id);
    // Never heard: in this coordinator's first lease it may still hold a grant of the previous
    // coordinator (up to the whole rate); after that, at most its fallback share. Live members
    // renew every 250 ms, so this holds raises back only that long at a cluster's start.
    if (!r) return now - this.since < leaseMs ? rate : fallback;
    const since = now - r.heardAt;
    if (since <= silentMs) return Math.max(r.applied, r.granted);
    // Silent: its lease (counted from an answer that came within the request deadline, shorter
    // than a lease) has surely run out after two leases; until then it may still apply its grant.
    return since <= 2 * leaseMs ? Math.max(r.applied, r.granted, fallback) : fallback;
  }

  /** Members heard from, for status (id → the rate last granted). */
  grants(): Map<string, number> {
    return new Map([...this.records].map(([id, r]) => [id, r.granted]));
  }
}
