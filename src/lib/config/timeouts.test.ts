import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../../core/errors.js';
import { parseWorkerConfig } from './index.js';

test('peer deadlines have defaults and take durations', () => {
  const peer = ({ peerConnect, peerFirstByte, peerIdle }: ReturnType<typeof parseWorkerConfig>['timeouts']) => ({ peerConnect, peerFirstByte, peerIdle });
  assert.deepEqual(peer(parseWorkerConfig({}).timeouts), { peerConnect: 5000, peerFirstByte: 30_000, peerIdle: 30_000 });
  const tuned = peer(parseWorkerConfig({ timeouts: { peerConnect: '1s', peerFirstByte: '10s', peerIdle: 2500 } }).timeouts);
  assert.deepEqual(tuned, { peerConnect: 1000, peerFirstByte: 10_000, peerIdle: 2500 });
  assert.throws(() => parseWorkerConfig({ timeouts: { peerFirstByte: 'soon' } }), (e: FanoutError) => e.code === 'INVALID_CONFIG');
  assert.throws(() => parseWorkerConfig({ timeouts: { peerTypo: '1s' } }), (e: FanoutError) => e.code === 'INVALID_CONFIG');
});

test('how long 102 Processing heads may hold a peer request has a default (2 min) and takes a duration', () => {
  assert.equal(parseWorkerConfig({}).timeouts.peerFilling, 120_000);
  assert.equal(parseWorkerConfig({ timeouts: { peerFilling: '5m' } }).timeouts.peerFilling, 300_000);
  assert.throws(() => parseWorkerConfig({ timeouts: { peerFilling: 'long' } }), (e: FanoutError) => e.code === 'INVALID_CONFIG');
});
