import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FanoutError } from '../../core/errors.js';
import { parseWorkerConfig } from './index.js';

const invalid = (pattern: RegExp) => (err: FanoutError) => err.code === 'INVALID_CONFIG' && pattern.test(err.message);

test('a rate too large to count in bytes is refused (a string of digits was Infinity: every uncached read waited for ever)', () => {
  const huge = `1${'0'.repeat(400)}`;
  assert.throws(() => parseWorkerConfig({ id: 'w', sourceRate: huge }), invalid(/sourceRate.*too large/));
  assert.throws(() => parseWorkerConfig({ id: 'w', workerSourceRate: `${huge}MB/s` }), invalid(/workerSourceRate.*too large/));
  assert.throws(() => parseWorkerConfig({ id: 'w', lines: { wan: { rate: huge } } }), invalid(/too large/));
  assert.throws(() => parseWorkerConfig({ id: 'w', capacity: 2 ** 60 }), invalid(/capacity.*too large/));
});

test('a rate above 0 but below 1 byte/s is refused, not floored to 0 (which means no limit); 0 still means none', () => {
  for (const value of [0.5, '0.9', '0.9B/s']) {
    assert.throws(() => parseWorkerConfig({ id: 'w', sourceRate: value }), invalid(/less than 1 byte\/s/), String(value));
    assert.throws(() => parseWorkerConfig({ id: 'w', workerSourceRate: value }), invalid(/less than 1 byte\/s/), String(value));
    assert.throws(() => parseWorkerConfig({ id: 'w', mounts: { data: { uri: '/tmp', sourceRate: value } } }), invalid(/less than 1 byte\/s/), String(value));
  }
  assert.equal(parseWorkerConfig({ id: 'w', sourceRate: 0 }).sourceRate, 0);
  assert.equal(parseWorkerConfig({ id: 'w', sourceRate: '0MB/s' }).sourceRate, 0);
  assert.equal(parseWorkerConfig({ id: 'w', sourceRate: '0.5KB/s' }).sourceRate, 500);
  assert.equal(parseWorkerConfig({ id: 'w', scrub: { rate: 'off' } }).scrub.rate, 0);
});

test('durations are from 0 to what a timer can hold (a longer one fires at once)', () => {
  for (const value of [-1, Number.NaN, 2 ** 31, '25d', '600h', `1${'0'.repeat(400)}s`]) {
    assert.throws(() => parseWorkerConfig({ id: 'w', timeouts: { sourceFirstByte: value } }), invalid(/timeouts\.sourceFirstByte/), String(value));
  }
  assert.equal(parseWorkerConfig({ id: 'w', timeouts: { sourceFirstByte: '500h' } }).timeouts.sourceFirstByte, 1_800_000_000);
});
