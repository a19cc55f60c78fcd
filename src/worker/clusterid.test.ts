import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { isFanoutError } from '../core/errors.js';
import { parseWorkerConfig } from '../lib/config/index.js';
import { clusterIdOf, refuseOwnAddresses, refuseOwnSourceReads } from './clusterid.js';

const members = [
  { id: 'a1', url: 'http://10.0.0.1:7450' },
  { id: 'a2', url: 'http://10.0.0.2:7450' },
];
const worker = (id: string, listen: string, static_ = members) => parseWorkerConfig({ id, listen, membership: { static: static_ } });

describe('cluster ids', () => {
  test('every worker of a static cluster has the same id, whatever the order of its list; another cluster has another', () => {
    const a1 = clusterIdOf(worker('a1', '10.0.0.1:7450'));
    assert.match(a1, /^[0-9a-f]{16}$/);
    assert.equal(clusterIdOf(worker('a2', '10.0.0.2:7450', [...members].reverse())), a1);
    assert.notEqual(clusterIdOf(worker('b1', '10.1.0.1:7450', [{ id: 'b1', url: 'http://10.1.0.1:7450' }])), a1);
  });

  test('workers sharing an etcd prefix share an id; another prefix is another cluster', () => {
    const etcd = (prefix: string) => parseWorkerConfig({ membership: { etcd: { endpoints: ['http://127.0.0.1:2379'], prefix } } });
    assert.equal(clusterIdOf(etcd('/fanout/dc-a/members/')), clusterIdOf(etcd('/fanout/dc-a/members/')));
    assert.notEqual(clusterIdOf(etcd('/fanout/dc-a/members/')), clusterIdOf(etcd('/fanout/dc-b/members/')));
  });

  test('a request that came through this cluster\'s own source is refused', () => {
    const req = (via?: string) => ({ headers: via === undefined ? {} : { 'x-fanout-via': via } }) as unknown as IncomingMessage;
    assert.doesNotThrow(() => refuseOwnSourceReads(req(), 'abc'));
    assert.doesNotThrow(() => refuseOwnSourceReads(req('other'), 'abc'));
    assert.throws(() => refuseOwnSourceReads(req('other, abc'), 'abc'), (err) => isFanoutError(err, 'INVALID_CONFIG') && /source loop/.test(err.message));
  });

  test('a source naming one of this cluster\'s own addresses is refused before anything starts', () => {
    const config = worker('a1', '10.0.0.1:7450');
    assert.throws(() => refuseOwnAddresses(config, 'data', ['http://10.9.9.9:7450', 'http://10.0.0.2:7450']), (err) => isFanoutError(err, 'INVALID_CONFIG') && /itself \(a loop\)/.test(err.message));
    assert.doesNotThrow(() => refuseOwnAddresses(config, 'data', ['http://10.9.9.9:7450']));
  });
});
