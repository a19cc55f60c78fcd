import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_LISTED_ERRORS, RECENT_VERSIONS, summarizeReleases } from './overview.js';
import { RELEASES_PREFIX, type AgentState } from './registry.js';

function agent(host: string, patch: Partial<AgentState>): AgentState {
  return { host, channel: 'prod', dir: '/srv/x', current: 'v1', target: 'v1', phase: 'idle', bytesDone: 0, bytesTotal: 0, bytesLocal: 0, bytesFetched: 0, error: null, updatedAt: '2026-01-01T00:00:00Z', ...patch };
}

function index(agents: AgentState[], versions = ['v1', 'v2']): Record<string, string> {
  const out: Record<string, string> = {};
  versions.forEach((v, i) => {
    out[`${RELEASES_PREFIX}llm/versions/${v}`] = JSON.stringify({ name: 'llm', version: v, mount: 'data', prefix: 'llm/', manifest: `llm/.fanout/${v}.json`, manifestSha256: 'a'.repeat(64), pageSize: 4096, bytes: 100, files: 1, pages: 1, uniquePages: 1, createdAt: `2026-01-01T00:00:${String(i).padStart(2, '0')}Z` });
  });
  out[`${RELEASES_PREFIX}llm/channels/prod`] = JSON.stringify({ version: 'v2', history: ['v1'], updatedAt: '2026-01-01T00:01:00Z' });
  for (const a of agents) out[`${RELEASES_PREFIX}llm/agents/${encodeURIComponent(a.host)}`] = JSON.stringify(a);
  return out;
}

describe('the release overview', () => {
  test('a thousand hosts become a few groups: counts per channel, version and phase, staging progress summed', () => {
    const agents = [
      ...Array.from({ length: 900 }, (_, i) => agent(`on-${i}`, { current: 'v2', target: 'v2' })),
      ...Array.from({ length: 90 }, (_, i) => agent(`staging-${i}`, { current: 'v1', target: 'v2', phase: 'staging', bytesDone: 25, bytesTotal: 100 })),
      ...Array.from({ length: 10 }, (_, i) => agent(`broken-${i}`, { current: 'v1', target: 'v2', phase: 'error', error: 'DISK_FULL: no space left' })),
    ];
    const [llm] = summarizeReleases(index(agents));
    assert.equal(llm!.name, 'llm');
    assert.equal(llm!.channels.prod!.version, 'v2');
    assert.equal(llm!.hosts.total, 1000);
    assert.equal(llm!.hosts.onChannelVersion, 900);
    assert.deepEqual(llm!.hosts.groups.map((g) => [g.phase, g.current, g.hosts]), [['idle', 'v2', 900], ['staging', 'v1', 90], ['error', 'v1', 10]]);
    assert.deepEqual(llm!.hosts.staging, { hosts: 90, bytesDone: 90 * 25, bytesTotal: 90 * 100 });
    assert.equal(llm!.hosts.errorCount, 10);
    assert.equal(llm!.hosts.errors[0]!.error, 'DISK_FULL: no space left');
    assert.equal(llm!.hostList, undefined, 'the host list only when asked for');
    assert.equal(summarizeReleases(index(agents), 'llm')[0]!.hostList!.length, 1000);
  });

  test("a host in error on its channel's version name (RELEASE_EXISTS: another tree installed under it) counts as in error, not on the version", () => {
    const conflict = 'RELEASE_EXISTS: llm@v2 is published with manifest b…, but this host installed v2 with manifest a… and other files';
    const [llm] = summarizeReleases(index([agent('on', { current: 'v2', target: 'v2' }), agent('conflict', { current: 'v2', target: 'v2', phase: 'error', error: conflict })]));
    assert.equal(llm!.hosts.onChannelVersion, 1, 'only the host in sync');
    assert.equal(llm!.hosts.errorCount, 1);
  });

  test('errors are listed up to a cap and counted beyond it', () => {
    const agents = Array.from({ length: MAX_LISTED_ERRORS + 25 }, (_, i) => agent(`h${i}`, { phase: 'error', error: 'HASH_MISMATCH: bad page' }));
    const [llm] = summarizeReleases(index(agents));
    assert.equal(llm!.hosts.errors.length, MAX_LISTED_ERRORS);
    assert.equal(llm!.hosts.errorCount, MAX_LISTED_ERRORS + 25);
  });

  test('recent versions only, oldest first; an unreadable record does not hide the rest', () => {
    const versions = Array.from({ length: RECENT_VERSIONS + 5 }, (_, i) => `v${i}`);
    const raw = index([agent('a', {})], versions);
    raw[`${RELEASES_PREFIX}other/channels/prod`] = '{not json';
    const [llm, ...rest] = summarizeReleases(raw);
    assert.equal(llm!.versionCount, RECENT_VERSIONS + 5);
    assert.deepEqual(llm!.versions.map((v) => v.version), versions.slice(-RECENT_VERSIONS));
    assert.equal(rest.length, 0, 'a release with only an unreadable record is not shown');
  });

  test('hosts are grouped by datacenter; a host on a scoped channel counts against the channel it follows', () => {
    const raw = index([
      agent('a1', { datacenter: 'dc-a', current: 'v2', target: 'v2' }),
      agent('b1', { datacenter: 'dc-b', following: 'prod@dc-b', current: 'v1', target: 'v1' }),
      agent('b2', { datacenter: 'dc-b', following: 'prod@dc-b', current: 'v1', target: 'v1' }),
      agent('x', { current: 'v1', target: 'v2', phase: 'staging' }),
    ]);
    raw[`${RELEASES_PREFIX}llm/channels/prod@dc-b`] = JSON.stringify({ version: 'v1', history: ['v2'], updatedAt: '2026-01-01T00:02:00Z' });
    const [llm] = summarizeReleases(raw);
    assert.deepEqual(llm!.hosts.groups.map((g) => [g.datacenter, g.current, g.hosts]), [['', 'v1', 1], ['dc-a', 'v2', 1], ['dc-b', 'v1', 2]]);
    assert.equal(llm!.hosts.onChannelVersion, 3, 'a1 on prod, b1 and b2 on prod@dc-b');
  });
});
