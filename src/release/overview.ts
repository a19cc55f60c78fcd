import { recordOrUndefined } from './records.js';
import { RELEASES_PREFIX, type AgentState, type ChannelRecord, type VersionRecord } from './registry.js';

/**
 * Every release at a glance, from one read of the release index: channels, recent versions, and
 * the rollout across hosts summarized (counts per channel, version and phase; errors listed), so
 * that a thousand hosts cost the dashboard a few rows, not a thousand. The full host list comes
 * only when asked for, one release at a time.
 */
export interface ReleaseOverview {
  name: string;
  channels: Record<string, ChannelRecord>;
  /** The most recent versions, oldest first. */
  versions: VersionRecord[];
  versionCount: number;
  hosts: HostSummary;
  /** Every host of this release, when asked for (`hosts=NAME`). */
  hostList?: AgentState[];
}

export interface HostSummary {
  total: number;
  /**
   * Hosts whose `current` is their channel's version and that are not in error: as `release
   * status` and a rollout's wave count them. A host whose installed tree under that name is not
   * the one published under it now (RELEASE_EXISTS, reissue.ts) reports that name as `current`,
   * in error: it was counted here as on the version (found by a fault hunt).
   */
  onChannelVersion: number;
  /**
   * One row per (datacenter, channel, current, target, phase) with its host count: by datacenter
   * ('' for hosts without one), biggest first within each.
   */
  groups: { datacenter: string; channel: string; current: string | null; target: string | null; phase: AgentState['phase']; hosts: number }[];
  /** Of the hosts staging: bytes done and to do, summed. */
  staging: { hosts: number; bytesDone: number; bytesTotal: number };
  errors: { host: string; channel: string; target: string | null; error: string; updatedAt: string }[];
  errorCount: number;
}

export const RECENT_VERSIONS = 10;
export const MAX_LISTED_ERRORS = 50;
export const MAX_HOST_LIST = 5000;

/** Builds the overview of every release from the raw key → value map of the release index. */
export function summarizeReleases(index: Record<string, string>, hostsOf?: string): ReleaseOverview[] {
  const byName = new Map<string, { channels: Record<string, ChannelRecord>; versions: VersionRecord[]; agents: AgentState[] }>();
  for (const [key, value] of Object.entries(index)) {
    if (!key.startsWith(RELEASES_PREFIX)) continue;
    const [name, kind, ...rest] = key.slice(RELEASES_PREFIX.length).split('/');
    const id = rest.join('/');
    if (!name || !id) continue;
    // One unreadable record must not hide every release: it is left out of the summary.
    const what = kind === 'channels' ? 'channel' : kind === 'versions' ? 'version' : kind === 'agents' ? 'agent' : undefined;
    const record = what && recordOrUndefined(what, key, value);
    if (!record) continue;
    let entry = byName.get(name);
    if (!entry) byName.set(name, (entry = { channels: {}, versions: [], agents: [] }));
    if (kind === 'channels') entry.channels[id] = record as ChannelRecord;
    else if (kind === 'versions') entry.versions.push(record as VersionRecord);
    else entry.agents.push(record as AgentState);
  }
  return [...byName.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, { channels, versions, agents }]) => {
      versions.sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
      agents.sort((a, b) => (a.host < b.host ? -1 : 1));
      const overview: ReleaseOverview = {
        name,
        channels,
        versions: versions.slice(-RECENT_VERSIONS),
        versionCount: versions.length,
        hosts: summarizeHosts(agents, channels),
      };
      if (hostsOf === name) overview.hostList = agents.slice(0, MAX_HOST_LIST);
      return overview;
    });
}

export function summarizeHosts(agents: AgentState[], channels: Record<string, ChannelRecord>): HostSummary {
  const groups = new Map<string, HostSummary['groups'][number]>();
  const summary: HostSummary = { total: agents.length, onChannelVersion: 0, groups: [], staging: { hosts: 0, bytesDone: 0, bytesTotal: 0 }, errors: [], errorCount: 0 };
  for (const agent of agents) {
    // The channel the host follows now (prod@dc-b when that one moved last: scope.ts), as it reported.
    const followed = channels[agent.following ?? agent.channel];
    if (followed && agent.current === followed.version && agent.phase !== 'error') summary.onChannelVersion++;
    const datacenter = agent.datacenter ?? '';
    const key = JSON.stringify([datacenter, agent.channel, agent.current, agent.target, agent.phase]);
    const group = groups.get(key);
    if (group) group.hosts++;
    else groups.set(key, { datacenter, channel: agent.channel, current: agent.current, target: agent.target, phase: agent.phase, hosts: 1 });
    if (agent.phase === 'staging') {
      summary.staging.hosts++;
      summary.staging.bytesDone += agent.bytesDone;
      summary.staging.bytesTotal += agent.bytesTotal;
    }
    if (agent.error) {
      summary.errorCount++;
      if (summary.errors.length < MAX_LISTED_ERRORS) {
        summary.errors.push({ host: agent.host, channel: agent.channel, target: agent.target, error: agent.error, updatedAt: agent.updatedAt });
      }
    }
  }
  summary.groups = [...groups.values()].sort((a, b) => (a.datacenter === b.datacenter ? b.hosts - a.hosts : a.datacenter < b.datacenter ? -1 : 1));
  return summary;
}
