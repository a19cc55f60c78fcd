import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminClient, FanoutClient, openSessionCount } from '../../src/client/index.js';
import { ReleaseFetcher } from '../../src/release/fetch.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { startCluster, TEST_ADMIN_TOKEN, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

async function readAll(client: FanoutClient, path: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of (await client.createReadStream(path)) as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** One cluster session per process: clients of the same cluster share members, ring and pools. */
describe('the cluster session shared by the clients of one process', () => {
  let workers: WorkerProcess[];
  let source: string;
  let content: Buffer;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-session-'));
    content = randomBytes(3 * MiB + 5);
    await writeFile(join(source, 'a.bin'), content);
    workers = await startCluster(2, { mounts: { data: source }, pageSize: '1MiB' });
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  test('two readers of one process share one member refresh and one connection pool per worker', async () => {
    const endpoint = workers.map((w) => w.url);
    // No hedges: each page goes to its owner only, so the pools opened are exactly the owners'.
    const mountLike = new FanoutClient({ endpoint, token: TEST_ADMIN_TOKEN, pageCacheBytes: 4 * MiB, hedge: 'off' });
    const syncLike = new FanoutClient({ endpoint, token: TEST_ADMIN_TOKEN, hedge: 'off' });
    try {
      assert.equal(mountLike.session, syncLike.session);
      // Concurrent first calls join one request for the member list.
      await Promise.all([mountLike.cluster(), syncLike.cluster(), mountLike.cluster()]);
      assert.deepEqual(await readAll(mountLike, '/data/a.bin'), content);
      assert.deepEqual(await readAll(syncLike, '/data/a.bin'), content);
      const release = new ReleaseFetcher(syncLike);
      assert.equal(await release.pageSize(), MiB);
      const admin = new AdminClient(syncLike);
      const info = await syncLike.stat('/data/a.bin');
      await admin.load(workers[0]!.url, { pages: [{ mount: 'data', path: 'a.bin', version: info.version, size: info.size, index: 0 }] });
      const stats = mountLike.session.stats();
      assert.equal(stats.users, 2);
      assert.equal(stats.memberRefreshes, 1, 'one member refresh for both clients and the release fetcher');
      assert.equal(stats.readers, 2);
      // The ring of two workers on random ports may give every page of the file to one of them.
      const ring = new HashRing((await mountLike.cluster()).members);
      const owners = new Set(Array.from({ length: Math.ceil(info.size / MiB) }, (_, index) => ring.owners(pageKey({ mount: 'data', path: 'a.bin', version: info.version, size: info.size, index }, MiB), 1)[0]!.id));
      assert.equal(stats.connectionPools, owners.size, 'one page pool per worker read from, not one per client');
    } finally {
      await mountLike.close();
      await syncLike.close();
    }
  });

  test('a refresh forced by one client is the member list the other reads', async () => {
    const endpoint = workers[0]!.url;
    const a = new FanoutClient({ endpoint, token: TEST_ADMIN_TOKEN });
    const b = new FanoutClient({ endpoint, token: TEST_ADMIN_TOKEN });
    try {
      const first = await a.cluster();
      const forced = await b.cluster(true);
      assert.notEqual(forced, first, 'the forced refresh asked the cluster again');
      assert.equal(await a.cluster(), forced, 'the other client sees the refreshed list without asking');
      assert.equal(a.session.stats().memberRefreshes, 2);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('closing one client leaves the other reading; the last close closes the session', async () => {
    const endpoint = workers[1]!.url;
    const sessionsBefore = openSessionCount();
    const a = new FanoutClient({ endpoint, token: TEST_ADMIN_TOKEN });
    const b = new FanoutClient({ endpoint, token: TEST_ADMIN_TOKEN });
    const session = a.session;
    assert.equal(openSessionCount(), sessionsBefore + 1);
    await a.close();
    await a.close(); // a second close of the same client releases nothing more
    assert.equal(session.stats().users, 1);
    assert.equal(session.closed, false);
    assert.deepEqual(await readAll(b, '/data/a.bin'), content);
    await b.close();
    assert.equal(session.closed, true);
    assert.equal(openSessionCount(), sessionsBefore);
    const c = new FanoutClient({ endpoint, token: TEST_ADMIN_TOKEN });
    try {
      assert.notEqual(c.session, session, 'a client made after the last close gets a new session');
      assert.deepEqual(await readAll(c, '/data/a.bin'), content);
    } finally {
      await c.close();
    }
  });

  test('clients with other credentials or other endpoints get sessions of their own', async () => {
    const a = new FanoutClient({ endpoint: workers[0]!.url, token: TEST_ADMIN_TOKEN });
    const otherToken = new FanoutClient({ endpoint: workers[0]!.url, token: 'another-token-0123456789' });
    const otherEndpoint = new FanoutClient({ endpoint: workers[1]!.url, token: TEST_ADMIN_TOKEN });
    try {
      assert.notEqual(a.session, otherToken.session);
      assert.notEqual(a.session, otherEndpoint.session);
    } finally {
      await Promise.all([a.close(), otherToken.close(), otherEndpoint.close()]);
    }
  });
});
