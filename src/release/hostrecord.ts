import { FanoutError } from '../core/errors.js';
import { claimHost } from './hostclaim.js';
import { machineFingerprint } from './machine.js';
import type { AgentState, ReleaseRegistry } from './registry.js';

/** State is reported under a 15 s lease (the registry's default); a third of it keeps an idle host in `release status`. */
const LEASE_TTL_MS = 15_000;
const HEARTBEAT_MS = 5_000;

export interface HostRecordOptions {
  registry: ReleaseRegistry;
  /** The release. */
  name: string;
  /** Whether the host id was given (`--host`) or is the hostname: HOST_IN_USE says which. */
  hostGiven: boolean;
  /** How often the record is renewed during a round (default 5 s; tests shorten it). */
  heartbeatMs?: number;
}

/**
 * A sync agent's record in `release status` (etcd, under a lease): taken before anything is
 * reported (one agent per host id, hostclaim.ts), then written in order and renewed while a
 * round runs, so a dead host drops out and a live one, however long its round, does not.
 */
export class HostRecord {
  readonly heartbeatMs: number;
  /** Not ours until claimed (etcd was down, or another agent's): nothing is written before. */
  private claimed = false;
  private lastReport = 0;
  /** The report in flight (reports are sent in order, see report()). */
  private reporting: Promise<void> = Promise.resolve();
  /** What the last report sent: a heartbeat during a round sends it again. */
  private lastSent: AgentState | undefined;

  /** `state` is the agent's: changed by it and by report(), sent as it is at each report. */
  constructor(
    private readonly opts: HostRecordOptions,
    readonly state: AgentState,
  ) {
    this.heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;
  }

  get isClaimed(): boolean {
    return this.claimed;
  }

  /** Takes the host's record with the state as it is (HOST_IN_USE if another agent's is live). */
  async claim(signal?: AbortSignal): Promise<void> {
    this.state.machine ??= await machineFingerprint();
    Object.assign(this.state, { updatedAt: new Date().toISOString() });
    const state = { ...this.state };
    await claimHost({ registry: this.opts.registry, name: this.opts.name, state, leaseTtlMs: LEASE_TTL_MS, hostGiven: this.opts.hostGiven, signal });
    this.claimed = true;
    this.lastSent = state;
    this.lastReport = performance.now();
  }

  /** Reports state to etcd; `must` makes an etcd failure an error, otherwise it is skipped. */
  async report(patch: Partial<AgentState>, must: boolean): Promise<void> {
    Object.assign(this.state, patch, { updatedAt: new Date().toISOString() });
    // Not ours yet: writing it would overwrite another agent's.
    if (!this.claimed) return;
    this.lastReport = performance.now();
    // One report at a time, each with the state as it was when asked: a progress report sent
    // without waiting must not land after (and overwrite) the error or switch that followed it.
    const snapshot = { ...this.state };
    this.lastSent = snapshot;
    const sent = this.reporting.then(() => this.opts.registry.reportAgent(this.opts.name, snapshot));
    this.reporting = sent.catch(() => {});
    try {
      await sent;
    } catch (err) {
      // HOST_IN_USE whatever `must` says: another agent has the host id now, and this one stops.
      if ((err instanceof FanoutError && err.code === 'HOST_IN_USE') || (must && this.state.phase !== 'error')) throw err;
    }
  }

  /** A progress report, at most one a second; its failure is the next report's business. */
  async reportProgress(): Promise<void> {
    if (performance.now() - this.lastReport >= 1000) await this.report({}, false).catch(() => {});
  }

  /**
   * Runs `work` with the heartbeat on. A round may last long (a slow hook, a stalled download):
   * the lease is renewed meanwhile, or the host would drop out of `release status` after 15 s.
   */
  async beating<T>(work: () => Promise<T>): Promise<T> {
    const beat = setInterval(() => this.heartbeat(), this.heartbeatMs);
    try {
      return await work();
    } finally {
      clearInterval(beat);
    }
  }

  /**
   * Renews the record during a round when nothing was reported for a while. It sends what was
   * last reported, not the state as it is: during a hook that is "switching", so a rollout does
   * not count the host as switched before its hook ended.
   */
  private heartbeat(): void {
    const snapshot = this.lastSent;
    if (!snapshot || performance.now() - this.lastReport < this.heartbeatMs) return;
    this.lastReport = performance.now();
    this.reporting = this.reporting.then(() => this.opts.registry.reportAgent(this.opts.name, snapshot)).catch(() => {});
  }
}
