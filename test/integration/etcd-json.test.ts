import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FanoutError } from '../../src/core/errors.js';
import { EtcdError, EtcdJsonClient } from '../../src/lib/etcdjson/index.js';
import { ReleaseRegistry, type AgentState } from '../../src/release/registry.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { waitFor } from '../harness/ports.js';

describe("etcd's JSON gateway (the release index's reads and writes)", { timeout: 60_000 }, () => {
  let etcd: EtcdServer;
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  test('a first endpoint that takes requests and never answers: reads, writes and leases go to the next, and a compare-and-put it applied counts as done', async () => {
    // Passes each request on to etcd and drops the answer: a hung endpoint, and the worst case
    // for a write, which etcd applied although the client never hears so.
    const forwarded: Promise<unknown>[] = [];
    const blackhole: Server = createServer((req) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => forwarded.push(fetch(etcd.endpoint + req.url, { method: 'POST', body: Buffer.concat(chunks) }).then((r) => r.text())));
    });
    await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve));
    const kv = new EtcdJsonClient({ endpoints: [`http://127.0.0.1:${(blackhole.address() as AddressInfo).port}`, etcd.endpoint] }, 500);
    try {
      assert.equal(await kv.putIf([{ key: '/h/new', target: 'CREATE', result: 'EQUAL', revision: '0' }], '/h/new', 'mine'), true);
      await Promise.all(forwarded);
      assert.equal(forwarded.length, 1, 'the hung endpoint passed the write on to etcd, which applied it');
      assert.equal((await kv.get('/h/new'))?.value, 'mine');
      assert.equal(await kv.putIf([{ key: '/h/new', target: 'CREATE', result: 'EQUAL', revision: '0' }], '/h/new', 'other'), false);
      const lease = await kv.grantLease(30);
      assert.ok((await kv.keepAlive(lease)) > 0);
      assert.equal(forwarded.length, 1, 'after one no-answer, the answering endpoint is asked first');
    } finally {
      kv.close();
      blackhole.closeAllConnections();
      blackhole.close();
    }
  });

  test('get, prefix listing, put, compare-and-put, leases and their renewal against a real etcd', async () => {
    const kv = new EtcdJsonClient({ endpoints: [etcd.endpoint] });
    try {
      assert.equal(await kv.get('/t/a'), null);
      await kv.put('/t/a', 'é one');
      await kv.put('/t/b/c', 'two');
      await kv.put('/t0', 'outside the prefix');
      const a = await kv.get('/t/a');
      assert.equal(a?.value, 'é one');
      assert.deepEqual((await kv.getPrefix('/t/')).map((e) => [e.key, e.value]), [['/t/a', 'é one'], ['/t/b/c', 'two']]);
      // Create-if-absent holds once; a swap holds only against the revision read.
      assert.equal(await kv.putIf([{ key: '/t/new', target: 'CREATE', result: 'EQUAL', revision: '0' }], '/t/new', '1'), true);
      assert.equal(await kv.putIf([{ key: '/t/new', target: 'CREATE', result: 'EQUAL', revision: '0' }], '/t/new', '2'), false);
      assert.equal(await kv.putIf([{ key: '/t/a', target: 'MOD', result: 'EQUAL', revision: a!.modRevision }], '/t/a', 'swapped'), true);
      assert.equal(await kv.putIf([{ key: '/t/a', target: 'MOD', result: 'EQUAL', revision: a!.modRevision }], '/t/a', 'stale'), false);
      assert.equal((await kv.get('/t/a'))?.value, 'swapped');
      assert.equal((await kv.get('/t/new'))?.value, '1');
      // A key under a lease; the lease renewed; an unknown lease refused.
      const lease = await kv.grantLease(30);
      await kv.put('/t/leased', 'x', lease);
      assert.ok((await kv.keepAlive(lease)) > 0);
      await assert.rejects(kv.put('/t/other', 'x', '12345'), (err: EtcdError) => err.grpcCode === 5);
      assert.equal(await kv.keepAlive('12345'), 0);
    } finally {
      kv.close();
    }
  });

  test("an agent whose lease expired is reported again under a new one; a watch (gRPC) still sees the gateway's writes", async () => {
    const registry = new ReleaseRegistry({ endpoints: [etcd.endpoint] });
    const reader = new EtcdJsonClient({ endpoints: [etcd.endpoint] });
    try {
      const state: AgentState = { host: 'h1', channel: 'prod', dir: '/srv/x', current: null, target: null, phase: 'idle', bytesDone: 0, bytesTotal: 0, bytesLocal: 0, bytesFetched: 0, error: null, updatedAt: new Date().toISOString() };
      await registry.reportAgent('app', state, 1);
      assert.deepEqual((await registry.listAgents('app')).map((s) => s.host), ['h1']);
      await waitFor('the 1 s lease to expire', async () => (await registry.listAgents('app')).length === 0);
      await sleep(100);
      await registry.reportAgent('app', { ...state, phase: 'staging' }, 1);
      assert.deepEqual((await registry.listAgents('app')).map((s) => s.phase), ['staging']);

      let changes = 0;
      const watch = await registry.watchChannel('app', 'prod', (event) => event === 'change' && changes++);
      try {
        await reader.put('/fanout/releases/app/channels/prod', JSON.stringify({ version: 'v1', history: [], updatedAt: '' }));
        await waitFor('the watch to see the write', async () => changes > 0);
      } finally {
        watch.close();
      }
    } finally {
      reader.close();
      await registry.close();
    }
  });

  test("an agent back after its record expired never overwrites the record another agent of another directory took meanwhile", async () => {
    const away = new ReleaseRegistry({ endpoints: [etcd.endpoint] });
    const other = new ReleaseRegistry({ endpoints: [etcd.endpoint] });
    try {
      const state: AgentState = { host: 'shared', channel: 'prod', dir: '/srv/a', current: null, target: null, phase: 'idle', bytesDone: 0, bytesTotal: 0, bytesLocal: 0, bytesFetched: 0, error: null, updatedAt: new Date().toISOString() };
      assert.deepEqual(await away.claimAgent('app2', state, 1), { claimed: true });
      await away.reportAgent('app2', state, 1);
      await waitFor('the 1 s lease to expire', async () => (await away.listAgents('app2')).length === 0);
      assert.deepEqual(await other.claimAgent('app2', { ...state, dir: '/srv/b' }), { claimed: true });
      await assert.rejects(away.reportAgent('app2', { ...state, phase: 'staging' }, 1), (err: FanoutError) => err.code === 'HOST_IN_USE' && err.message.includes('/srv/b'));
      assert.deepEqual((await other.listAgents('app2')).map((a) => a.dir), ['/srv/b']);
    } finally {
      await away.close();
      await other.close();
    }
  });

  test("a record of the same directory is taken at once from this machine (or an earlier version's, with no machine), never from another machine", async () => {
    const mine = new ReleaseRegistry({ endpoints: [etcd.endpoint] });
    const clone = new ReleaseRegistry({ endpoints: [etcd.endpoint] });
    try {
      const state: AgentState = { host: 'cloned', channel: 'prod', dir: '/srv/a', current: null, target: null, phase: 'idle', bytesDone: 0, bytesTotal: 0, bytesLocal: 0, bytesFetched: 0, error: null, updatedAt: new Date().toISOString() };
      assert.deepEqual(await mine.claimAgent('app3', state), { claimed: true });
      assert.deepEqual(await mine.claimAgent('app3', { ...state, machine: 'aaaaaaaaaaaaaaaa' }), { claimed: true }, 'no machine in the record: this one');
      assert.deepEqual(await mine.claimAgent('app3', { ...state, machine: 'aaaaaaaaaaaaaaaa', phase: 'staging' }), { claimed: true }, 'a restart');
      const refused = await clone.claimAgent('app3', { ...state, machine: 'bbbbbbbbbbbbbbbb' });
      assert.ok(!refused.claimed && refused.holder.machine === 'aaaaaaaaaaaaaaaa', JSON.stringify(refused));
      assert.deepEqual((await mine.listAgents('app3')).map((a) => [a.machine, a.phase]), [['aaaaaaaaaaaaaaaa', 'staging']]);
    } finally {
      await mine.close();
      await clone.close();
    }
  });
});
