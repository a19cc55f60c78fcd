import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminClient, FanoutClient, type FanoutError } from '../../src/client/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { startCluster, TEST_ADMIN_TOKEN, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** The typed admin client against a real worker: bodies and answers through the wire schemas. */
describe('the typed admin client', () => {
  let workers: WorkerProcess[];
  let source: string;
  let client: FanoutClient;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-admin-'));
    await writeFile(join(source, 'a.bin'), randomBytes(3 * MiB));
    workers = await startCluster(1, { mounts: { data: source }, pageSize: '1MiB' });
    client = new FanoutClient({ endpoint: workers[0]!.url, token: TEST_ADMIN_TOKEN });
  });

  after(async () => {
    await client?.close();
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  test('loads, pins, sets a TTL, unpins and frees pages, each answer typed', async () => {
    const admin = new AdminClient(client);
    const base = workers[0]!.url;
    const info = await client.stat('/data/a.bin');
    const pages = [0, 1, 2].map((index) => ({ mount: 'data', path: 'a.bin', version: info.version, size: info.size, index }));
    const loaded = await admin.load(base, { pages });
    assert.deepEqual({ loaded: loaded.loaded, bytes: loaded.bytesLoaded, failed: loaded.failed }, { loaded: 3, bytes: 3 * MiB, failed: [] });
    assert.equal((await admin.load(base, { pages })).present, 3);
    const keys = pages.map((ref) => pageKey(ref, MiB));
    assert.deepEqual(await admin.pin(base, { keys }), { pinned: 3, held: 3 });
    assert.deepEqual(await admin.ttl(base, { keys, ttlMs: 3_600_000 }), { keys: 3, ttlMs: 3_600_000 });
    assert.deepEqual(await admin.unpin(base, { keys }), { unpinned: 3 });
    assert.deepEqual(await admin.free(base, { keys: keys.slice(0, 2) }), { freed: 2 });
    assert.equal((await admin.load(base, { pages })).loaded, 2, 'the freed pages were fetched again');
  });

  test('a body the worker would refuse is refused before any request, with the shape expected', async () => {
    const admin = new AdminClient(client);
    await assert.rejects(admin.pin(workers[0]!.url, {}), (e: FanoutError) => e.code === 'INVALID_ARGUMENT' && /keys/.test(e.message));
    await assert.rejects(admin.load('http://127.0.0.1:9', { pages: [], rate: 5 }), (e: FanoutError) => e.code === 'INVALID_ARGUMENT' && /rate/.test(e.message));
  });
});
