import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isFanoutError } from '../core/errors.js';
import { summarizeReleases } from './overview.js';
import { readRecord } from './records.js';
import { RELEASES_PREFIX } from './registry.js';

const channel = JSON.stringify({ version: 'v1', history: [], updatedAt: '2026-12-06T00:00:00Z' });

test('a record of another shape is RECORD_INVALID naming its key and how to mend it, never a TypeError', () => {
  const key = `${RELEASES_PREFIX}app/channels/prod`;
  for (const value of ['garbage', '{}', 'null', '[]', '{"version":5,"history":[],"updatedAt":""}', '{"version":"v1","history":"v0","updatedAt":""}']) {
    assert.throws(
      () => readRecord('channel', key, value),
      (err: unknown) => isFanoutError(err, 'RECORD_INVALID') && err.message.includes(key) && err.message.includes(`etcdctl del ${key}`),
      value,
    );
  }
  assert.equal(readRecord('channel', key, channel).version, 'v1');
  const later = readRecord('channel', key, JSON.stringify({ ...JSON.parse(channel), addedLater: true })) as unknown as Record<string, unknown>;
  assert.equal(later.addedLater, true, 'fields of later versions pass through');
});

test('the overview leaves out records it cannot read and summarizes the rest', () => {
  const releases = summarizeReleases({
    [`${RELEASES_PREFIX}app/channels/prod`]: channel,
    [`${RELEASES_PREFIX}app/channels/broken`]: '{}',
    [`${RELEASES_PREFIX}app/agents/h1`]: 'null',
    [`${RELEASES_PREFIX}app/versions/v9`]: '{"version":"v9"}',
  });
  assert.equal(releases.length, 1);
  assert.deepEqual(Object.keys(releases[0]!.channels), ['prod']);
  assert.equal(releases[0]!.versionCount, 0);
});
