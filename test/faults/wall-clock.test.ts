import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Etcd3 } from 'etcd3';
import { join } from 'node:path';
import type { Member } from '../../src/core/types.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { SteppedWallClock } from '../harness/faketime.js';
import { WorkerProcess } from '../harness/workers.js';
import { workerBesideFakePeer } from './helpers.js';

const MiB = 1024 * 1024;
// Enough pages that the fake surely owns one (each page is its with odds 1/2: none in 2^-24 runs).
const PAGES = 24;
const NAME = 'stepped.bin';
const HOUR = 3600;

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * The worker's wall clock steps back an hour (an NTP step, a resumed VM, a clock set by hand) while
 * it waits for a peer's first byte. Worker w1 is real, under libfaketime; its only peer w2 is a fake
 * that answers /healthz but never a page, and steps w1's clock back when the first page is asked.
 * Before, the lean client's first-byte deadline was a Date.now() time: once the clock stepped, the
 * timer that fired after peerFirstByte saw the deadline an hour away and waited it out, and the read
 * hung. Deadlines are monotonic now: the peer is given up after peerFirstByte, the page is read from
 * the source, and the read gives the file.
 */
describe('the wall clock steps back an hour while a worker waits for a peer', () => {
  let source: string;
  let data: Buffer;
  let fake: Server;
  let w1: WorkerProcess;
  let clock: SteppedWallClock;
  const held = new Set<ServerResponse>();
  let pagesAsked = 0;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-wall-clock-'));
    data = randomBytes(PAGES * MiB);
    await writeFile(join(source, NAME), data);
    clock = new SteppedWallClock(`${source}.faketime`);
    fake = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://fake');
      if (url.pathname === '/healthz') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      if (!url.pathname.startsWith('/v1/page/')) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"NOT_FOUND","message":"fake"}}');
      // w1 has started its first-byte deadline for this request: its clock steps now, before that
      // deadline's timer fires (peerFirstByte from now).
      if (pagesAsked++ === 0) clock.step(-HOUR);
      held.add(res);
      res.on('close', () => held.delete(res));
    });
    w1 = await workerBesideFakePeer(fake, source, { peerFirstByte: '2s', peerIdle: '2s' }, clock.env);
  });

  after(async () => {
    await w1?.destroy();
    for (const res of held) res.destroy();
    fake?.closeAllConnections();
    await new Promise((resolve) => fake?.close(resolve));
    await rm(source, { recursive: true, force: true });
    await rm(`${source}.faketime`, { force: true });
  });

  test('a read of pages the silent peer owns gives the file: the peer is given up after peerFirstByte, not an hour', { timeout: 60_000 }, async () => {
    const stat = (await (await fetch(`${w1.url}/v1/stat/data/${NAME}`)).json()) as { version: string; size: number };
    const { members } = (await (await fetch(`${w1.url}/v1/cluster`)).json()) as { members: Member[] };
    const ring = new HashRing(members);
    const owners = Array.from({ length: PAGES }, (_, index) => ring.owners(pageKey({ mount: 'data', path: NAME, version: stat.version, size: stat.size, index }, MiB), 1)[0]!.id);
    assert.ok(owners.includes('w2'), 'the silent peer owns some page');
    const response = await fetch(`${w1.url}/v1/data/data/${NAME}`);
    assert.equal(response.status, 200);
    const read = Buffer.from(await response.arrayBuffer());
    assert.equal(read.length, data.length, 'the whole file, not a cut answer');
    assert.equal(sha256(read), sha256(data));
    assert.ok(pagesAsked > 0, 'the silent peer was asked (and the clock stepped)');
  });
});


/**
 * A worker's wall clock steps back an hour while it is registered in etcd. Before, its membership
 * planned the next lease renewal by Date.now(): an hour away once the clock stepped, so etcd let the
 * lease expire (6 s here) and the worker dropped out of the cluster. The schedule is monotonic now.
 */
describe('the wall clock steps back an hour under a worker registered in etcd', () => {
  let etcd: EtcdServer;
  let source: string;
  let worker: WorkerProcess;
  let clock: SteppedWallClock;
  const key = '/fanout/wall-clock/members/w-stepped';

  before(async () => {
    etcd = await startEtcd();
    source = await mkdtemp(join(tmpdir(), 'fanout-wall-clock-etcd-'));
    clock = new SteppedWallClock(`${source}.faketime`);
    const membership = { etcd: { endpoints: [etcd.endpoint], prefix: '/fanout/wall-clock/members/', leaseTtlSeconds: 6 } };
    worker = await WorkerProcess.start({ id: 'w-stepped', mounts: { data: source }, membership }, undefined, { env: clock.env });
  });

  after(async () => {
    await worker?.destroy();
    await etcd?.stop();
    await rm(source, { recursive: true, force: true });
    await rm(`${source}.faketime`, { force: true });
  });

  test('the worker keeps renewing its lease: its record does not expire', { timeout: 60_000 }, async () => {
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      let lease = '0';
      while (lease === '0') {
        lease = String((await client.get(key).exec()).kvs[0]?.lease ?? '0');
        await new Promise((r) => setTimeout(r, 100));
      }
      clock.step(-HOUR);
      // etcd's count of the lease's whole seconds left goes up at each renewal (every TTL/3: 2 s).
      let renewals = 0;
      let last = Infinity;
      while (renewals < 3) {
        const left = Number((await client.leaseClient.leaseTimeToLive({ ID: lease })).TTL);
        assert.ok(left > 0, `lease ${lease} expired after ${renewals} renewals`);
        if (left > last) renewals++;
        last = left;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(String((await client.get(key).exec()).kvs[0]?.lease), lease, 'still registered under its first lease');
    } finally {
      client.close();
    }
  });
});
