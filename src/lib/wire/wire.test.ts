import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../../core/errors.js';
import { ADMIN_BODIES, HEADERS, PAGE_QUERY, ROUTES, batchRequestSchema, clusterInfoSchema, pagePath, parseAnswer, workerStatusSchema } from './index.js';
import { checkClusterInfo } from './clusterinfo.js';

describe('the wire contract', () => {
  test('a page path names the file encoded and the version, size, index and content hash as the worker parses them', () => {
    const path = pagePath({ mount: 'models', path: 'a b/c#1.bin', version: '"etag/1"', size: 10, index: 2, hash: 'ab'.repeat(32) });
    const url = new URL(path, 'http://x');
    assert.equal(url.pathname, '/v1/page/models/a%20b/c%231.bin');
    assert.equal(url.searchParams.get(PAGE_QUERY.version), '"etag/1"');
    assert.equal(url.searchParams.get(PAGE_QUERY.size), '10');
    assert.equal(url.searchParams.get(PAGE_QUERY.index), '2');
    assert.equal(url.searchParams.get(PAGE_QUERY.hash), 'ab'.repeat(32));
    assert.ok(!pagePath({ mount: 'm', path: 'f', version: 'v', size: 1, index: 0 }).includes(`${PAGE_QUERY.hash}=`));
    assert.ok(path.startsWith(`${ROUTES.page}/`));
    assert.equal(url.searchParams.get(PAGE_QUERY.pageSize), null, 'no page size unless given');
    const sized = new URL(pagePath({ mount: 'm', path: 'f', version: 'v', size: 1, index: 0 }, 4194304), 'http://x');
    assert.equal(sized.searchParams.get(PAGE_QUERY.pageSize), '4194304');
  });

  test('a batch body may name its page size, a positive integer', () => {
    const item = { mount: 'm', path: 'f', version: 'v', size: 1, index: 0 };
    assert.equal(batchRequestSchema.parse({ items: [item], pageSize: 1048576 }).pageSize, 1048576);
    assert.equal(batchRequestSchema.parse({ items: [item] }).pageSize, undefined);
    for (const bad of [0, -1, 1.5, '1MiB']) assert.equal(batchRequestSchema.safeParse({ items: [item], pageSize: bad }).success, false, String(bad));
  });

  test('header names are lower-case (they are compared as Node and the lean parser give them)', () => {
    for (const name of Object.values(HEADERS)) assert.equal(name, name.toLowerCase());
  });

  test('a /v1/cluster answer is accepted with unknown fields, and a foreign answer fails as WORKER_UNAVAILABLE naming the problem', () => {
    const answer = { self: 'w1', pageSize: 4194304, replication: 1, statTtlMs: 2000, members: [{ id: 'w1', url: 'http://127.0.0.1:7450', capacity: 1 }], stale: false, mounts: ['data'], future: true };
    assert.equal(parseAnswer(clusterInfoSchema, answer, ROUTES.cluster).members[0]!.id, 'w1');
    assert.throws(
      () => parseAnswer(clusterInfoSchema, { ...answer, pageSize: 'big' }, ROUTES.cluster),
      (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE' && /\/v1\/cluster/.test(e.message) && /pageSize/.test(e.message),
    );
    assert.throws(() => parseAnswer(clusterInfoSchema, '<html>', ROUTES.cluster), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE');
  });

  test('the SDK\'s zod-free check of a /v1/cluster answer accepts, strips and refuses exactly what the schema does', () => {
    const good = { self: 'w1', pageSize: 4194304, replication: 2, statTtlMs: 0, members: [{ id: 'w1', url: 'http://127.0.0.1:7450', capacity: 0, datacenter: 'dc1', extra: 1 }], stale: true, mounts: [], clusterId: 'c', upstream: ['u'], future: { x: 1 } };
    const { clusterId: _c, upstream: _u, ...minimal } = good;
    const variants: unknown[] = [
      good,
      minimal,
      { ...good, members: [] },
      '<html>',
      null,
      [],
      42,
      { ...good, self: 1 },
      { ...good, pageSize: 0 },
      { ...good, pageSize: 1.5 },
      { ...good, pageSize: '4194304' },
      { ...good, replication: -1 },
      { ...good, statTtlMs: -1 },
      { ...good, statTtlMs: 0.5 },
      { ...good, members: {} },
      { ...good, members: [null] },
      { ...good, members: [{ id: '', url: 'u', capacity: 1 }] },
      { ...good, members: [{ id: 'a', url: '', capacity: 1 }] },
      { ...good, members: [{ id: 'a', url: 'u', capacity: -1 }] },
      { ...good, members: [{ id: 'a', url: 'u' }] },
      { ...good, members: [{ id: 'a', url: 'u', capacity: 1, datacenter: 3 }] },
      { ...good, members: [{ id: 'a', url: 'u', capacity: 1 }, { id: 'a', url: 'v', capacity: 1 }] },
      { ...good, members: Array.from({ length: 4096 }, (_, i) => ({ id: `w${i}`, url: 'u', capacity: 1 })) },
      { ...good, members: Array.from({ length: 4097 }, (_, i) => ({ id: `w${i}`, url: 'u', capacity: 1 })) },
      { ...good, stale: 'no' },
      { ...good, mounts: [1] },
      { ...good, mounts: 'data' },
      { ...good, clusterId: 5 },
      { ...good, upstream: 'u' },
      { ...good, upstream: [1] },
      { ...good, self: undefined },
    ];
    for (const body of variants) {
      const expected = clusterInfoSchema.safeParse(body);
      if (expected.success) assert.deepEqual(checkClusterInfo(body, ROUTES.cluster), expected.data, JSON.stringify(body));
      else assert.throws(() => checkClusterInfo(body, ROUTES.cluster), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE' && e.message.startsWith(`${ROUTES.cluster}: not a fanout answer`), JSON.stringify(body));
    }
    assert.throws(() => checkClusterInfo({ ...good, pageSize: 'big' }, ROUTES.cluster), /at pageSize/);
    assert.throws(() => checkClusterInfo({ ...good, members: [{ id: 'a', url: 'u' }] }, ROUTES.cluster), /at members\.0\.capacity/);
  });

  test('a /v1/status answer keeps its send path and refuses an unknown one', () => {
    const status = { id: 'w1', url: 'u', capacity: 1, used: 0, pages: 0, hits: 0, misses: 0, bytesServed: 0, bytesFromSource: 0, evictions: 0, inflightSourceReads: 0, sourceRates: { data: 0 }, sendPath: 'sendfile' };
    assert.equal(parseAnswer(workerStatusSchema, status, ROUTES.status).sendPath, 'sendfile');
    assert.throws(() => parseAnswer(workerStatusSchema, { ...status, sendPath: 'pigeon' }, ROUTES.status), FanoutError);
  });

  test('admin bodies: one that names no page is refused, a load below the slowest rate too', () => {
    assert.equal(ADMIN_BODIES[ROUTES.adminPin].schema.safeParse({}).success, false);
    assert.equal(ADMIN_BODIES[ROUTES.adminPin].schema.safeParse({ rule: { mount: 'm', prefix: 'a/' } }).success, true);
    assert.equal(ADMIN_BODIES[ROUTES.adminTtl].schema.safeParse({ keys: ['a'.repeat(64)] }).success, false, 'ttlMs is required');
    assert.equal(ADMIN_BODIES[ROUTES.adminLoad].schema.safeParse({ pages: [], rate: 1000 }).success, false);
    assert.equal(ADMIN_BODIES[ROUTES.adminLoad].schema.safeParse({ pages: [], rate: 0 }).success, true);
  });
});
