import { setTimeout as delay } from 'node:timers/promises';
import { FanoutError } from '../core/errors.js';
import { describeHolder } from './machine.js';
import type { AgentState, ReleaseRegistry } from './registry.js';

export interface HostClaim {
  registry: Pick<ReleaseRegistry, 'claimAgent'>;
  name: string;
  /** What the agent reports first: its host id and directory. */
  state: AgentState;
  /** The record's lease: a dead agent's record is gone after it. */
  leaseTtlMs: number;
  /** Whether the host id was given (`--host`) or is the hostname: the error says which. */
  hostGiven: boolean;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  signal?: AbortSignal;
}

/** Between reads of another agent's record: a live agent rewrites it every 5 s. */
const RECHECK_MS = 1000;
/** Beyond the lease: etcd expires leases a little late. */
const EXPIRY_SLACK_MS = 2000;

/**
 * Takes the host's record in `release status` before the agent reports anything. Two agents on
 * one host for two directories, both under the hostname, wrote one record in turn: the host
 * flipped between the two directories in `release status` and in a rollout's reading of it; so
 * did two machines with one hostname (cloned VMs) syncing one directory path. A record of
 * another directory or another machine (registry.claimAgent, machine.ts) is waited on: a live
 * agent rewrites it (its mod revision moves within seconds), a dead one's goes with its lease.
 * Live, or still there after the lease, it is HOST_IN_USE naming the other directory or machine.
 * Host lists stay as they were: the first agent keeps the hostname, a second one is given a name
 * of its own with --host.
 */
export async function claimHost(claim: HostClaim): Promise<void> {
  const now = claim.now ?? Date.now;
  const sleep = claim.sleep ?? abortableSleep;
  const deadline = now() + claim.leaseTtlMs + EXPIRY_SLACK_MS;
  let seen: string | undefined;
  for (;;) {
    const result = await claim.registry.claimAgent(claim.name, claim.state, Math.ceil(claim.leaseTtlMs / 1000));
    if (result.claimed) return;
    const rewritten = seen !== undefined && result.modRevision !== seen;
    if (rewritten || now() >= deadline) throw inUse(claim, result.holder);
    seen = result.modRevision;
    await sleep(RECHECK_MS, claim.signal);
    if (claim.signal?.aborted) throw new FanoutError('ABORTED', 'stopped while waiting for the host record');
  }
}

function inUse(claim: HostClaim, holder: AgentState): FanoutError {
  const { host, dir, machine } = claim.state;
  const hostId = claim.hostGiven ? `host id ${host} (--host)` : `host id ${host} (the hostname: no --host given)`;
  // Another machine with this host id (a cloned VM, a container's default hostname): named by its own id.
  const remedy =
    holder.dir === dir
      ? `two machines share this host id: give the agent on this one a host id of its own with --host (e.g. --host ${host}-${machine?.slice(0, 6) ?? '2'})`
      : `give the agent of ${dir} a host id of its own with --host (e.g. --host ${host}-${suffixOf(dir)})`;
  return new FanoutError('HOST_IN_USE', `${hostId} is reported by ${describeHolder(holder, claim.state)} for release ${claim.name}: ${remedy}`);
}

/** The directory's last path segment, as a host id can hold it. */
function suffixOf(dir: string): string {
  return (dir.split('/').filter(Boolean).pop() ?? 'b').replace(/[^A-Za-z0-9._-]/g, '-');
}

/** Waits `ms`, less if aborted (the caller checks the signal after). */
function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return delay(ms, undefined, { signal }).catch(() => {});
}
