import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import { checkChannel, type ChannelRecord } from './registry.js';
import { channelOf, followedVersion, parseChannel, pickFollowed, promoteChannel, watchedChannels, type ChannelState } from './scope.js';
import { rolloutByDatacenter } from './dcstatus.js';
import type { AgentState } from './registry.js';

const state = (version: string, modRevision: number, history: string[] = []): ChannelState => ({ record: { version, history, updatedAt: '' }, modRevision: String(modRevision) });

test('a host of dc-b follows prod@dc-b when it was moved after prod, and prod when prod was moved last', () => {
  assert.equal(pickFollowed('prod', 'dc-b', state('v1', 10), state('v2', 11))?.record.version, 'v2');
  assert.equal(pickFollowed('prod', 'dc-b', state('v1', 10), state('v2', 11))?.channel, 'prod@dc-b');
  assert.equal(pickFollowed('prod', 'dc-b', state('v3', 12), state('v2', 11))?.channel, 'prod');
  assert.equal(pickFollowed('prod', 'dc-b', null, state('v2', 11))?.channel, 'prod@dc-b', 'a scoped channel alone is followed');
  assert.equal(pickFollowed('prod', 'dc-b', state('v1', 10), null)?.channel, 'prod');
  assert.equal(pickFollowed('prod', 'dc-b', null, null), null);
  // Revisions compare as numbers, not strings ("9" < "10").
  assert.equal(pickFollowed('prod', 'dc-b', state('v1', 9), state('v2', 10))?.channel, 'prod@dc-b');
});

test('hosts of other datacenters and hosts without one follow the plain channel only', () => {
  const channels = { prod: state('v1', 5), 'prod@dc-b': state('v2', 6) };
  assert.equal(followedVersion(channels, 'prod', 'dc-a')?.record.version, 'v1');
  assert.equal(followedVersion(channels, 'prod', undefined)?.record.version, 'v1');
  assert.equal(followedVersion(channels, 'prod', 'dc-b')?.record.version, 'v2');
  assert.deepEqual(watchedChannels('prod', 'dc-b'), ['prod', 'prod@dc-b']);
  assert.deepEqual(watchedChannels('prod', undefined), ['prod']);
  assert.deepEqual(watchedChannels('prod@dc-b', 'dc-b'), ['prod@dc-b'], 'an agent told prod@dc-b follows exactly that');
});

test('channel names: NAME or NAME@DATACENTER; --datacenter must agree with --channel', () => {
  assert.deepEqual(parseChannel('prod@dc-b'), { base: 'prod', datacenter: 'dc-b' });
  assert.equal(channelOf('prod', 'dc-b'), 'prod@dc-b');
  assert.equal(channelOf('prod@dc-b', 'dc-b'), 'prod@dc-b');
  assert.equal(channelOf('prod@dc-b'), 'prod@dc-b');
  const invalid = (err: unknown) => err instanceof FanoutError && err.code === 'INVALID_ARGUMENT';
  assert.throws(() => channelOf('prod@dc-a', 'dc-b'), invalid);
  checkChannel('prod@dc-b');
  assert.throws(() => checkChannel('prod@'), invalid);
  assert.throws(() => checkChannel('prod@a@b'), invalid);
  assert.throws(() => checkChannel('Prod'), invalid);
});

test('a new scoped channel inherits the plain channel history, so the datacenter can roll back', async () => {
  const calls: { channel: string; seed: string[] | undefined }[] = [];
  const records: Record<string, ChannelRecord> = { prod: { version: 'v1', history: ['v0'], updatedAt: '' } };
  const registry = {
    getChannel: async (_name: string, channel: string) => (records[channel] ? { record: records[channel]!, modRevision: '1' } : null),
    promote: async (_name: string, channel: string, version: string, _expect?: string, seed?: string[]) => {
      calls.push({ channel, seed });
      records[channel] = { version, history: seed ?? [], updatedAt: '' };
      return { previous: null, record: records[channel]! };
    },
  };
  await promoteChannel(registry, 'llm', 'prod@dc-b', 'v2');
  assert.deepEqual(calls[0], { channel: 'prod@dc-b', seed: ['v1', 'v0'] });
  await promoteChannel(registry, 'llm', 'prod@dc-b', 'v3');
  assert.deepEqual(calls[1], { channel: 'prod@dc-b', seed: [] }, 'an existing channel keeps its own history');
});

const agent = (host: string, datacenter: string | undefined, current: string | null, phase: AgentState['phase'], error: string | null = null): AgentState => ({
  host,
  channel: 'prod',
  ...(datacenter ? { datacenter } : {}),
  dir: '/r',
  current,
  target: null,
  phase,
  bytesDone: 0,
  bytesTotal: 0,
  bytesLocal: 0,
  bytesFetched: 0,
  error,
  updatedAt: '',
});

test('release status groups hosts by datacenter: switched, staging, failed and behind against the version each follows', () => {
  const channels = { prod: state('v1', 5), 'prod@dc-b': state('v2', 6) };
  const rows = rolloutByDatacenter(
    [
      agent('a1', 'dc-a', 'v1', 'idle'),
      agent('a2', 'dc-a', 'v0', 'idle'),
      agent('b1', 'dc-b', 'v2', 'idle'),
      agent('b2', 'dc-b', 'v1', 'staging'),
      agent('b3', 'dc-b', 'v1', 'error', 'HASH_MISMATCH: page 3'),
      agent('x', undefined, 'v1', 'idle'),
    ],
    channels,
  );
  assert.deepEqual(
    rows.map((r) => [r.datacenter, r.following, r.version, r.hosts, r.switched, r.staging, r.failed, r.behind]),
    [
      ['', 'prod', 'v1', 1, 1, 0, 0, 0],
      ['dc-a', 'prod', 'v1', 2, 1, 0, 0, 1],
      ['dc-b', 'prod@dc-b', 'v2', 3, 1, 1, 1, 0],
    ],
  );
  assert.deepEqual(rows[2]!.errors, [{ host: 'b3', error: 'HASH_MISMATCH: page 3' }]);
});
