import type { AgentState } from './registry.js';
import { followedVersion, type ChannelState } from './scope.js';

/**
 * `fanout release status NAME`, per datacenter: for each (datacenter, channel) the channel key its
 * hosts follow and its version, and how many hosts are on it (switched), staging it, failed,
 * or otherwise behind. A host's expected version comes from the channels themselves (with their
 * revisions, as its agent resolves them), not from what the host reported, so a host that has
 * not yet noticed a promotion counts as behind, not as switched.
 */
export interface DatacenterRollout {
  /** '' for hosts whose agent runs without --datacenter. */
  datacenter: string;
  channel: string;
  /** `prod` or `prod@DC`: the key these hosts follow now; null if neither exists. */
  following: string | null;
  version: string | null;
  hosts: number;
  switched: number;
  staging: number;
  failed: number;
  /** Neither switched, staging nor failed: idle on another version, or not yet told. */
  behind: number;
  errors: { host: string; error: string }[];
}

export const MAX_ERRORS_PER_DATACENTER = 20;

export function rolloutByDatacenter(agents: AgentState[], channels: Record<string, ChannelState>): DatacenterRollout[] {
  const groups = new Map<string, DatacenterRollout>();
  for (const agent of agents) {
    const datacenter = agent.datacenter ?? '';
    const key = JSON.stringify([datacenter, agent.channel]);
    let group = groups.get(key);
    if (!group) {
      const followed = agent.channel.includes('@') ? followedVersion(channels, agent.channel, undefined) : followedVersion(channels, agent.channel, datacenter || undefined);
      group = { datacenter, channel: agent.channel, following: followed?.channel ?? null, version: followed?.record.version ?? null, hosts: 0, switched: 0, staging: 0, failed: 0, behind: 0, errors: [] };
      groups.set(key, group);
    }
    group.hosts++;
    if (group.version !== null && agent.current === group.version && agent.phase !== 'error') group.switched++;
    else if (agent.phase === 'error') group.failed++;
    else if (agent.phase === 'staging' || agent.phase === 'switching') group.staging++;
    else group.behind++;
    if (agent.error && group.errors.length < MAX_ERRORS_PER_DATACENTER) group.errors.push({ host: agent.host, error: agent.error });
  }
  return [...groups.values()].sort((a, b) => (a.datacenter === b.datacenter ? (a.channel < b.channel ? -1 : 1) : a.datacenter < b.datacenter ? -1 : 1));
}
