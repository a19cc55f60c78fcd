import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { Etcd3 } from 'etcd3';
import type { Member } from '../../src/core/types.js';
import { EtcdMembership, type EtcdMembershipOptions } from '../../src/lib/membership/index.js';
import type { EventEmitter } from 'node:events';
import { untilEvent } from '../harness/ports.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';

const PREFIX = '/fanout/it/members/';
const TTL = 2;

function member(id: string): Member {
  return { id, url: `http://${id}.test:7450`, capacity: 1024 ** 3 };
}

function ids(m: EtcdMembership): string[] {
  return m.members().map((x) => x.id);
}

/** Resolves with the args of the next `event`. */
function next<T>(emitter: EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, resolve));
}

describe('EtcdMembership against a real etcd', { timeout: 60_000 }, () => {
  let etcd: EtcdServer;
  const started: EtcdMembership[] = [];

  const open = async (opts: Partial<EtcdMembershipOptions>): Promise<EtcdMembership> => {
    const m = new EtcdMembership({
      endpoints: [etcd.endpoint],
      prefix: PREFIX,
      leaseTtlSeconds: TTL,
      requestTimeoutMs: 1000,
      ...opts,
    });
    started.push(m);
    await m.start();
    return m;
  };

  /** What etcd itself holds under the prefix, read with a separate client. */
  const registeredInEtcd = async (): Promise<string[]> => {
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      const keys = await client.getAll().prefix(PREFIX).keys();
      return keys.map((k) => k.slice(PREFIX.length)).sort();
    } finally {
      client.close();
    }
  };

  let a: EtcdMembership;
  let b: EtcdMembership;
  let observer: EtcdMembership;

  before(async () => {
    etcd = await startEtcd();
  });

  after(async () => {
    for (const m of started) await m.stop().catch(() => undefined);
    await etcd?.stop();
  });

  test('two members register and each sees both; a watcher without self sees them too', async () => {
    a = await open({ self: member('a') });
    b = await open({ self: member('b') });
    observer = await open({});
    for (const m of [a, b, observer]) await untilEvent(m, 'change', () => ids(m).join() === 'a,b', 'both members listed');
    assert.deepEqual(a.members(), [member('a'), member('b')]);
    assert.equal(a.stale, false);
    assert.deepEqual(await registeredInEtcd(), ['a', 'b']);
  });

  test('a stopped member deregisters and the others see it leave', async () => {
    await b.stop();
    for (const m of [a, observer]) await untilEvent(m, 'change', () => ids(m).join() === 'a', 'b gone');
    // Revoked, not left to expire: etcd no longer holds it.
    assert.deepEqual(await registeredInEtcd(), ['a']);
  });

  test('a member that dies without deregistering disappears when its lease expires', async () => {
    const c = await open({ self: member('c') });
    await untilEvent(a, 'change', () => ids(a).join() === 'a,c', 'c joined');
    await c.stop({ deregister: false }); // like a crash: no revoke, keepalives just stop
    assert.deepEqual(await registeredInEtcd(), ['a', 'c']);
    // Only the lease expiry can remove it now; the watchers see the delete.
    for (const m of [a, observer]) await untilEvent(m, 'change', () => ids(m).join() === 'a', 'c expired');
    assert.deepEqual(await registeredInEtcd(), ['a']);
  });

  test('an etcd outage keeps the last list and marks it stale; recovery re-registers', async () => {
    const before = a.members();
    const oldLease = a.lease;
    assert.ok(oldLease);
    const firstLease = next<string>(a, 'registered');
    const leaseLost = next<string>(a, 'leaseLost');
    etcd.kill();
    for (const m of [a, observer]) await untilEvent(m, 'stale', () => m.stale, 'stale during outage');
    assert.deepEqual(a.members(), before, 'last known members are kept');
    assert.deepEqual(ids(observer), ['a']);

    // Past the TTL without renewals, a must assume its lease is gone.
    assert.equal(await leaseLost, 'expired');
    assert.deepEqual(a.members(), before, 'still the last known members');

    await etcd.restart();
    const newLease = await firstLease;
    assert.ok(newLease && newLease !== oldLease, 'registered again under a new lease');
    assert.equal(a.lease, newLease);
    for (const m of [a, observer]) await untilEvent(m, 'stale', () => !m.stale, 'fresh again after recovery');
    assert.deepEqual(await registeredInEtcd(), ['a']);
    assert.deepEqual(ids(a), ['a']);
    assert.deepEqual(ids(observer), ['a']);

    // The watch works again: a newcomer is seen by both.
    await open({ self: member('d') });
    for (const m of [a, observer]) await untilEvent(m, 'change', () => ids(m).join() === 'a,d', 'd seen after recovery');
  });

  test('a second member with the same id at another address is refused while the first lives; after a crash, it waits out the old lease and takes over', async () => {
    const twins = (m: EtcdMembership) => m.members().filter((x) => x.id === 'twin').map((x) => x.url);
    const first = await open({ self: member('twin') });
    const elsewhere = { ...member('twin'), url: 'http://elsewhere.test:7450' };
    await assert.rejects(open({ self: elsewhere }), (err: Error & { code?: string }) => err.code === 'INVALID_CONFIG' && /already registered by a running worker at http:\/\/twin\.test:7450/.test(err.message));
    assert.deepEqual(twins(first), [member('twin').url], 'the first keeps its record');
    // The first dies without deregistering: its record goes with its lease, and the second takes the id.
    await first.stop({ deregister: false });
    const second = await open({ self: elsewhere });
    assert.deepEqual(twins(second), [elsewhere.url]);
    // The same address coming back (a restart) takes its record over at once.
    await second.stop({ deregister: false });
    const again = await open({ self: elsewhere });
    assert.deepEqual(twins(again), [elsewhere.url]);
  });

  test('a member whose record is overwritten by hand (garbage, another address, no lease) writes it back, and watchers follow', async () => {
    const self = member('edited');
    const m = await open({ self });
    const client = new Etcd3({ hosts: etcd.endpoint });
    /** Polls etcd until the record is self's own under m's lease again; the test's timeout bounds it. */
    const restored = async () => {
      for (;;) {
        const { kvs } = await client.get(PREFIX + 'edited').exec();
        if (kvs[0]?.value.toString() === JSON.stringify(self) && String(kvs[0].lease) === m.lease) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    const observed = () => observer.members().find((x) => x.id === 'edited')?.url;
    try {
      for (const value of ['garbage', JSON.stringify({ ...self, url: 'http://127.0.0.1:9' }), JSON.stringify(self)]) {
        await client.put(PREFIX + 'edited').value(value);
        await restored();
        await untilEvent(observer, 'change', () => observed() === self.url, `observer sees edited at its address after ${value}`);
      }
    } finally {
      client.close();
    }
  });

  test('start() fails cleanly when etcd is unreachable', async () => {
    const m = new EtcdMembership({
      endpoints: ['http://127.0.0.1:1'],
      self: member('x'),
      leaseTtlSeconds: TTL,
      requestTimeoutMs: 200,
      startTimeoutMs: 500,
    });
    await assert.rejects(m.start(), { code: 'WORKER_UNAVAILABLE' });
    assert.deepEqual(m.members(), []);
    await m.stop(); // idempotent after a failed start
  });

  test('a member whose first endpoint accepts connections but never answers stays registered without a gap', async () => {
    // Like a hung etcd: TCP is accepted, no byte ever comes back.
    const sockets = new Set<Socket>();
    const hung = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    try {
      const watcher = await open({});
      const m = await open({ self: member('h'), endpoints: [`http://127.0.0.1:${(hung.address() as AddressInfo).port}`, etcd.endpoint] });
      await untilEvent(watcher, 'change', () => ids(watcher).includes('h'), 'h listed');
      const gaps: string[][] = [];
      const lost: string[] = [];
      const onChange = () => !ids(watcher).includes('h') && gaps.push(ids(watcher));
      const onLost = (reason: string) => lost.push(reason);
      watcher.on('change', onChange);
      m.on('leaseLost', onLost);
      await new Promise((resolve) => setTimeout(resolve, 4 * TTL * 1000)); // several lease periods
      watcher.off('change', onChange);
      m.off('leaseLost', onLost);
      assert.deepEqual(lost, [], 'the lease was never lost');
      assert.deepEqual(gaps, [], 'the watcher never saw h leave');
      assert.equal(m.stale, false);
    } finally {
      for (const s of sockets) s.destroy();
      hung.close();
    }
  });
});
