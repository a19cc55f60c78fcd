import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
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
