/**
 * What the page knows about the cluster, merged from every member's answer. No DOM here: the
 * merging is unit-tested in Node.
 */
import type { Member, WorkerStatus } from '../../../core/types.js';
import type { Activity } from '../activity.js';
import type { HistorySample } from '../history.js';
import type { RelayedMember } from '../index.js';

export const WINDOW_MS = 15 * 60_000;

export interface MemberState {
  id: string;
  url: string;
  health: 'up' | 'down';
  /** False once the member left the membership (a stopped worker's lease expired): shown as down for a while. */
  inCluster: boolean;
  error?: string;
  lastAnswer?: number;
  status?: WorkerStatus;
  activity?: Activity;
  /** The member's samples of the window, by time. */
  samples: Map<number, HistorySample>;
}

export interface ClusterView {
  members: Member[];
  mounts: string[];
  stale: boolean;
  self: string;
}

export interface Point {
  t: number;
  value: number;
}

export class ClusterModel {
  readonly members = new Map<string, MemberState>();
  mounts: string[] = [];
  stale = false;
  self = '';

  /** Takes the member list of /v1/cluster; members that left stay listed as down for the window. */
  updateCluster(cluster: ClusterView, now: number): void {
    this.mounts = cluster.mounts;
    this.stale = cluster.stale;
    this.self = cluster.self;
    const present = new Set<string>();
    for (const member of cluster.members) {
      present.add(member.id);
      const known = this.members.get(member.id);
      if (known) {
        known.url = member.url;
        known.inCluster = true;
      } else {
        this.members.set(member.id, { id: member.id, url: member.url, health: 'up', inCluster: true, samples: new Map() });
      }
    }
    for (const [id, state] of this.members) {
      if (present.has(id)) continue;
      if (state.inCluster) {
        state.inCluster = false;
        state.health = 'down';
        state.error = 'left the membership (stopped, or its lease expired)';
      }
      if (now - (state.lastAnswer ?? 0) > WINDOW_MS) this.members.delete(id);
    }
  }

  /**
   * Members to ask this round: those in the cluster, the ones that answered last time first, so
   * that hung members (each costs a deadline) do not hold back everyone else's figures.
   */
  liveIds(): string[] {
    const live = [...this.members.values()].filter((m) => m.inCluster);
    return [...live.filter((m) => m.health === 'up'), ...live.filter((m) => m.health !== 'up')].map((m) => m.id);
  }

  /** The time of the member's newest sample (asked for with `since`, so only new ones travel). */
  since(id: string): number {
    let latest = 0;
    for (const t of this.members.get(id)?.samples.keys() ?? []) latest = Math.max(latest, t);
    return latest;
  }

  /** Applies one member's answer; `undefined` is a call that failed in the browser (deadline). */
  applyMember(id: string, answer: RelayedMember | undefined, now: number, failure = 'no answer in time'): void {
    const state = this.members.get(id);
    if (!state || !state.inCluster) return;
    if (answer?.reachable) {
      state.health = 'up';
      state.error = undefined;
      state.lastAnswer = now;
      state.status = answer.status;
      state.activity = answer.activity;
      for (const sample of answer.history.samples) state.samples.set(sample.t, sample);
    } else if (answer?.error.code === 'OVERLOADED') {
      return; // the relaying worker was busy: nothing learnt about this member
    } else {
      state.health = 'down';
      state.error = answer ? answer.error.message : failure;
      state.activity = undefined;
    }
    for (const t of state.samples.keys()) if (t < now - WINDOW_MS) state.samples.delete(t);
  }

  /** Members in display order: down first (what needs a look), then by id. */
  ordered(): MemberState[] {
    return [...this.members.values()].sort((a, b) => (a.health === b.health ? (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) : a.health === 'down' ? -1 : 1));
  }

  totals(): { up: number; total: number; capacity: number; used: number; pages: number; hits: number; misses: number } {
    const out = { up: 0, total: 0, capacity: 0, used: 0, pages: 0, hits: 0, misses: 0 };
    for (const m of this.members.values()) {
      out.total++;
      if (m.health !== 'up' || !m.status) continue;
      out.up++;
      out.capacity += m.status.capacity;
      out.used += m.status.used;
      out.pages += m.status.pages;
      out.hits += m.status.hits;
      out.misses += m.status.misses;
    }
    return out;
  }

  /** Bytes/s read from `mount`'s source across the cluster, one point per sample time. */
  sourceSeries(mount: string): Point[] {
    return this.series((s) => (s.source[mount] ?? 0) / seconds(s));
  }

  /**
   * The named lines the members that are up cross, with their rate and mounts. A mount's implicit
   * line (`mount:NAME`, from its own `sourceRate`) is left out: its mount's chart already shows it.
   */
  namedLines(): { name: string; rate: number; mounts: string[] }[] {
    const lines = new Map<string, { name: string; rate: number; mounts: Set<string> }>();
    for (const m of this.members.values()) {
      if (m.health !== 'up' || !m.status) continue;
      for (const l of m.status.lines ?? []) {
        if (l.line.startsWith('mount:')) continue;
        const line = lines.get(l.line) ?? { name: l.line, rate: l.rate, mounts: new Set<string>() };
        for (const mount of l.mounts) line.mounts.add(mount);
        lines.set(l.line, line);
      }
    }
    return [...lines.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).map((l) => ({ name: l.name, rate: l.rate, mounts: [...l.mounts].sort() }));
  }

  /** Bytes/s read across a line: the source reads of every mount on it, summed over the cluster. */
  lineSeries(mounts: string[]): Point[] {
    return this.series((s) => mounts.reduce((sum, mount) => sum + (s.source[mount] ?? 0), 0) / seconds(s));
  }

  /** Page bytes/s sent to readers across the cluster. */
  servedSeries(): Point[] {
    return this.series((s) => s.served / seconds(s));
  }

  /**
   * The cluster's source budget of `mount` (bytes/s): the rate of the line it crosses, else the
   * live members' shares added up. 0 = unlimited; undefined = no member answered.
   */
  budget(mount: string): number | undefined {
    let sum: number | undefined;
    for (const m of this.members.values()) {
      if (m.health !== 'up' || !m.status) continue;
      // A mount on a line: the line's rate is the cluster's budget (members' leased shares move).
      const line = m.status.lines?.find((l) => l.mounts.includes(mount));
      if (line) return line.rate;
      const share = m.status.sourceRates[mount];
      if (share === undefined) continue;
      if (share === 0) return 0;
      sum = (sum ?? 0) + share;
    }
    return sum;
  }

  /**
   * The line `mount` crosses, across the members that are up: its name and rate, the shares
   * leased now, and what waits for it per class. undefined for a mount on no line.
   */
  line(mount: string): { name: string; rate: number; shares: number; waitingReads: number; waitingPreloads: number; coordinator?: string } | undefined {
    let out: ReturnType<ClusterModel['line']>;
    for (const m of this.members.values()) {
      if (m.health !== 'up' || !m.status) continue;
      const l = m.status.lines?.find((x) => x.mounts.includes(mount));
      if (!l) continue;
      out ??= { name: l.line, rate: l.rate, shares: 0, waitingReads: 0, waitingPreloads: 0, coordinator: l.coordinator };
      out.shares += l.share;
      out.waitingReads += l.queue.read.requests;
      out.waitingPreloads += l.queue.preload.requests;
    }
    return out;
  }

  /**
   * Sums `value` of every member's sample at each time, up to the newest time every member that
   * is up has reported: a time only some members have sampled yet would show as a false dip.
   */
  private series(value: (s: HistorySample) => number): Point[] {
    let cutoff = Infinity;
    for (const m of this.members.values()) if (m.health === 'up' && m.samples.size > 0) cutoff = Math.min(cutoff, this.since(m.id));
    const sums = new Map<number, number>();
    for (const m of this.members.values()) {
      for (const sample of m.samples.values()) if (sample.t <= cutoff) sums.set(sample.t, (sums.get(sample.t) ?? 0) + value(sample));
    }
    return [...sums.entries()].sort(([a], [b]) => a - b).map(([t, v]) => ({ t, value: v }));
  }
}

function seconds(sample: HistorySample): number {
  return Math.max(0.001, sample.ms / 1000);
}
