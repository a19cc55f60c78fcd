import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEtcdClient } from '../../src/lib/membership/index.js';
import { DEFERRED_EXTRA_CA } from '../../src/lib/tls/index.js';
import { etcdConnection, ReleaseRegistry } from '../../src/release/registry.js';
import { makeCa, type TestCa } from '../harness/certs.js';
import { enableEtcdAuth, startEtcd, type EtcdServer } from '../harness/etcd.js';
import { waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

const PREFIX = '/fanout/default/members/';

/** The member ids registered in etcd, read with the given connection. */
async function registered(connection: Parameters<typeof createEtcdClient>[0]): Promise<string[]> {
  const client = createEtcdClient(connection, 2000);
  try {
    return Object.keys(await client.getAll().prefix(PREFIX).strings()).map((k) => k.slice(PREFIX.length));
  } finally {
    client.close();
  }
}

describe('etcd with TLS, client certificates and passwords', { timeout: 120_000 }, () => {
  let ca: TestCa;
  let source: string;
  const cleanup: (() => Promise<void>)[] = [];

  before(async () => {
    ca = await makeCa('fanout-etcd');
    source = await mkdtemp(join(tmpdir(), 'fanout-etcd-src-'));
    await writeFile(join(source, 'f.bin'), 'through etcd');
  });

  after(async () => {
    for (const step of cleanup.reverse()) await step().catch(() => {});
    await rm(source, { recursive: true, force: true });
    await ca?.remove();
  });

  test('a worker registers through etcd over TLS with a client certificate; a client without one is refused', async () => {
    const server = await ca.issue('etcd');
    const client = await ca.issue('worker-client');
    const etcd = await startEtcd({ tls: { cert: server.cert, key: server.key, ca: ca.ca, clientCertAuth: true, client } });
    cleanup.push(() => etcd.stop());
    assert.match(etcd.endpoint, /^https:\/\//);
    const worker = await WorkerProcess.start({
      id: 'tls1',
      mounts: { data: source },
      membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3, tls: { ca: ca.ca, cert: client.cert, key: client.key } } },
    });
    cleanup.push(() => worker.destroy());
    const withCert = { endpoints: [etcd.endpoint], tls: { ca: ca.ca, cert: client.cert, key: client.key } };
    await waitFor('the worker to register in etcd', async () => (await registered(withCert)).includes('tls1'));
    await assert.rejects(registered({ endpoints: [etcd.endpoint], tls: { ca: ca.ca } }), 'no client certificate: refused');
    // Release commands take the same settings (--etcd-ca/--etcd-cert/--etcd-key).
    const registry = new ReleaseRegistry(etcdConnection({ etcd: etcd.endpoint, etcdCa: ca.ca, etcdCert: client.cert, etcdKey: client.key }, {}));
    try {
      assert.deepEqual(await registry.listVersions('nothing'), []);
    } finally {
      await registry.close();
    }
  });

  test('without a CA of its own, the gRPC client (a following sync\'s watch) trusts the NODE_EXTRA_CA_CERTS file the launcher deferred', async () => {
    const server = await ca.issue('etcd-plain');
    const etcd = await startEtcd({ tls: { cert: server.cert, key: server.key, ca: ca.ca } });
    cleanup.push(() => etcd.stop());
    const processSlots = process as unknown as Record<symbol, unknown>;
    processSlots[DEFERRED_EXTRA_CA] = ca.ca;
    try {
      assert.deepEqual(await registered({ endpoints: [etcd.endpoint] }), []);
    } finally {
      delete processSlots[DEFERRED_EXTRA_CA];
    }
    await assert.rejects(registered({ endpoints: [etcd.endpoint] }), 'the default roots do not trust the test CA');
  });

  test('a worker registers with etcd user and password; without the password etcd refuses', async () => {
    const etcd = await startEtcd();
    cleanup.push(() => etcd.stop());
    await enableEtcdAuth(etcd.endpoint, 'root-secret');
    const worker = await WorkerProcess.start({
      id: 'auth1',
      mounts: { data: source },
      membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3, auth: { username: 'root', password: 'root-secret' } } },
    });
    cleanup.push(() => worker.destroy());
    const auth = { username: 'root', password: 'root-secret' };
    await waitFor('the worker to register in etcd', async () => (await registered({ endpoints: [etcd.endpoint], auth })).includes('auth1'));
    await assert.rejects(registered({ endpoints: [etcd.endpoint] }), 'no password: refused');
    await assert.rejects(registered({ endpoints: [etcd.endpoint], auth: { username: 'root', password: 'wrong' } }), 'wrong password: refused');
    // Release commands read the password from FANOUT_ETCD_USER / FANOUT_ETCD_PASSWORD.
    const registry = new ReleaseRegistry(etcdConnection({ etcd: etcd.endpoint }, { FANOUT_ETCD_USER: 'root', FANOUT_ETCD_PASSWORD: 'root-secret' }));
    try {
      assert.deepEqual(await registry.listVersions('nothing'), []);
    } finally {
      await registry.close();
    }
  });

  test('etcd stopped: the worker logs the outage once, reads go on, and it logs the recovery', async () => {
    const etcd: EtcdServer = await startEtcd();
    cleanup.push(() => etcd.stop());
    const worker = await WorkerProcess.start({
      id: 'outage1',
      logLevel: 'info',
      mounts: { data: source },
      membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3 } },
    });
    cleanup.push(() => worker.destroy());
    const log = () => readFile(join(worker.dir, 'worker.log'), 'utf8');
    // Started, not only registered: the member list is read after the registration.
    await waitFor('registration and start logged', async () => (await log()).includes('registered in etcd') && (await log()).includes('worker started'));
    etcd.kill();
    await waitFor('the outage to be logged', async () => (await log()).includes('etcd unreachable'));
    const res = await fetch(`${worker.url}/v1/data/data/f.bin`);
    const body = await res.text();
    assert.equal(res.status, 200, body);
    assert.equal(body, 'through etcd');
    await etcd.restart();
    await waitFor('the recovery to be logged', async () => (await log()).includes('etcd reachable again'));
    const text = await log();
    assert.equal(text.split('\n').filter((l) => l.includes('etcd unreachable')).length, 1, 'one warning per outage, not one per retry');
    const warning = text.split('\n').find((l) => l.includes('etcd unreachable'))!;
    assert.equal(JSON.parse(warning).level, 40, 'logged as a warning');
  });
});
