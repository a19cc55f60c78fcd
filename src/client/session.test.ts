import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { ManualClock } from '../core/clock.js';
import { DEFAULT_PEER_TIMEOUTS } from '../lib/cluster/index.js';
import { ClusterSession } from './session.js';

/** The session's member refresh against a real HTTP server answering /v1/cluster, with a manual clock. */
describe('a cluster session', () => {
  let server: Server;
  let url: string;
  let asked = 0;
  let members = 1;
  let hold: Promise<void> = Promise.resolve();

  before(async () => {
    server = createServer((req, res) => {
      asked++;
      void hold.then(() => {
        const list = Array.from({ length: members }, (_, i) => ({ id: `w${i}`, url: `http://127.0.0.1:${9000 + i}`, capacity: 1 }));
        res.end(JSON.stringify({ self: 'w0', pageSize: 4096, replication: 1, statTtlMs: 1000, members: list, stale: false, mounts: ['data'] }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const open = (clock: ManualClock) =>
    new ClusterSession({ endpoints: [url], credentials: { headersFor: () => ({}) }, timeouts: DEFAULT_PEER_TIMEOUTS, membershipRefreshMs: 10_000, clock });

  test('asks for the members again only once the refresh interval has passed on its clock', async () => {
    const clock = new ManualClock(0);
    const session = open(clock);
    const before = asked;
    members = 1;
    await session.cluster();
    await clock.advance(9_999);
    await session.cluster();
    assert.equal(asked - before, 1);
    members = 2;
    await clock.advance(1);
    const info = await session.cluster();
    assert.equal(asked - before, 2);
    assert.equal(info.members.length, 2);
    assert.equal(session.ring.members().length, 2, 'the ring follows the new member list');
    assert.equal(session.stats().memberRefreshes, 2);
    await session.close();
  });

  test('callers that ask while a refresh is on its way share that one request', async () => {
    const session = open(new ManualClock(0));
    let answer!: () => void;
    hold = new Promise((r) => (answer = r));
    const before = asked;
    const pending = [session.cluster(), session.cluster(true), session.cluster(true)];
    for (let i = 0; i < 100 && asked === before; i++) await new Promise((r) => setTimeout(r, 10));
    answer();
    const infos = await Promise.all(pending);
    assert.equal(asked - before, 1);
    assert.ok(infos.every((info) => info === infos[0]));
    hold = Promise.resolve();
    await session.close();
  });

  test('a session whose members are pushed has no ring before the first push, and follows each push', async () => {
    const session = new ClusterSession({ endpoints: [], credentials: { headersFor: () => ({}) }, timeouts: DEFAULT_PEER_TIMEOUTS, clock: new ManualClock(0) });
    assert.throws(() => session.ring, /no members/);
    session.setMembers([{ id: 'a', url: 'http://127.0.0.1:1', capacity: 1 }]);
    assert.deepEqual(session.ring.members().map((m) => m.id), ['a']);
    await assert.rejects(session.cluster(), (e: Error & { code?: string }) => e.code === 'NO_WORKERS');
    await session.close();
    assert.equal(session.closed, true);
  });

  test('the last user to release it closes it; earlier releases leave it open', async () => {
    const session = open(new ManualClock(0)).retain().retain();
    await session.release();
    assert.equal(session.closed, false);
    assert.equal(session.stats().users, 1);
    await session.release();
    assert.equal(session.closed, true);
  });
});

/** A member that accepts connections and never answers (SIGSTOP, a hung host) among live ones. */
describe('a cluster session with a stopped member', () => {
  let hung: NetServer;
  let live: Server;
  let hungUrl: string;
  let liveUrl: string;
  let hungRequests = 0;
  let liveRequests = 0;

  before(async () => {
    hung = createNetServer((socket) => socket.on('data', (data) => (hungRequests += data.toString('latin1').split('GET ').length - 1)));
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
    hungUrl = `http://127.0.0.1:${(hung.address() as AddressInfo).port}`;
    live = createServer((req, res) => {
      liveRequests++;
      if (req.url === '/v1/cluster') {
        const list = [
          { id: 'hung', url: hungUrl, capacity: 1 },
          { id: 'live', url: liveUrl, capacity: 1 },
        ];
        res.end(JSON.stringify({ self: 'live', pageSize: 4096, replication: 1, statTtlMs: 1000, members: list, stale: false, mounts: ['data'] }));
      } else res.end(JSON.stringify({ path: 'f', size: 1, mtimeMs: 1, version: '1-1' }));
    });
    await new Promise<void>((r) => live.listen(0, '127.0.0.1', r));
    liveUrl = `http://127.0.0.1:${(live.address() as AddressInfo).port}`;
  });

  after(async () => {
    live.closeAllConnections();
    await new Promise((r) => live.close(r));
    await new Promise((r) => hung.close(r));
  });

  test('JSON requests ask a member that missed its deadline last from then on, not first on every call', async () => {
    // Deadlines shortened so the test does not wait 30 s; what is asserted is who was asked.
    const timeouts = { connectMs: 1000, firstByteMs: 200, idleMs: 200 };
    const session = new ClusterSession({ endpoints: [hungUrl, liveUrl], credentials: { headersFor: () => ({}) }, timeouts, membershipRefreshMs: 60_000 });
    try {
      await session.cluster(); // the hung endpoint is asked first (nothing is known of it yet)
      const before = hungRequests;
      for (let i = 0; i < 4; i++) assert.equal(((await session.getJson('/v1/stat/data/f')) as { size: number }).size, 1);
      // One more deadline, the first time it is known to be a member; none after it.
      assert.equal(hungRequests - before, 1);
      assert.ok(session.health.isDown('hung'));
      assert.ok(liveRequests >= 5);
    } finally {
      await session.close();
    }
  });

  test('a status asked with a deadline of its own gives up on the stopped member then, not at the session’s 30 s', async () => {
    const session = new ClusterSession({ endpoints: [liveUrl], credentials: { headersFor: () => ({}) }, timeouts: DEFAULT_PEER_TIMEOUTS });
    try {
      await session.cluster();
      await assert.rejects(session.getJsonFrom(hungUrl, '/v1/status', 300), (err: Error & { code?: string }) => err.code === 'WORKER_UNAVAILABLE' && /no answer within 300 ms/.test(err.message));
      assert.ok(session.health.isDown('hung'), 'asked last from then on');
    } finally {
      await session.close();
    }
  });
});

describe('a cluster session whose first endpoint is at a limit', () => {
  const servers: Server[] = [];
  const urls: string[] = [];

  before(async () => {
    for (const overloaded of [true, false]) {
      const server = createServer((_req, res) => {
        if (overloaded) {
          res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
          return void res.end(JSON.stringify({ error: { code: 'OVERLOADED', message: '8 source listings are running on this worker' } }));
        }
        res.end(JSON.stringify({ path: '/data/d', entries: [] }));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      servers.push(server);
      urls.push(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    }
  });

  after(async () => {
    for (const server of servers) {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  test('a JSON request answered OVERLOADED is asked of the next endpoint (before: the error was the answer)', async () => {
    const session = new ClusterSession({ endpoints: urls, credentials: { headersFor: () => ({}) }, timeouts: DEFAULT_PEER_TIMEOUTS, clock: new ManualClock(0) });
    try {
      assert.deepEqual(await session.getJson('/v1/list/data/d'), { path: '/data/d', entries: [] });
    } finally {
      await session.close();
    }
  });
});
