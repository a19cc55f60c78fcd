import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseWorkerConfig } from './index.js';

test('scrub.rate takes a rate in bytes/s, 0 or "off" turns the scrub off, and it is on by default', () => {
  assert.equal(parseWorkerConfig({}).scrub.rate, 16_000_000);
  assert.equal(parseWorkerConfig({ scrub: { rate: '50MB/s' } }).scrub.rate, 50_000_000);
  assert.equal(parseWorkerConfig({ scrub: { rate: 'off' } }).scrub.rate, 0);
  assert.equal(parseWorkerConfig({ scrub: { rate: 0 } }).scrub.rate, 0);
  assert.throws(() => parseWorkerConfig({ scrub: { rate: 'fast' } }), { code: 'INVALID_CONFIG' });
  assert.throws(() => parseWorkerConfig({ scrub: { rate: '1MB/s', every: '1h' } }), { code: 'INVALID_CONFIG' });
});
