import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCa, type TestCa } from '../harness/certs.js';
import { fanout, sha256 } from '../harness/cli.js';
import { TEST_ADMIN_TOKEN, TEST_CLUSTER_SECRET, WorkerProcess } from '../harness/workers.js';

const READ_TOKEN = 'dc-b-read-token-0123456789';

/** Cluster A serves HTTPS and wants a read token; B reads it as fanouts:// with the mount's token and CA. */
describe('a remote cluster over TLS with a read token', () => {
  let ca: TestCa;
  let source: string;
  let a: WorkerProcess;
  let b: WorkerProcess;
  let noToken: WorkerProcess;
  const content = randomBytes(3 * 1024 * 1024 + 77);

  before(async () => {
    ca = await makeCa('fanout-dc');
    const server = await ca.issue('server');
    source = await mkdtemp(join(tmpdir(), 'fanout-dc-tls-'));
    await writeFile(join(source, 'f.bin'), content);
    const auth = { tokens: [{ token: TEST_ADMIN_TOKEN, role: 'admin' as const }, { token: READ_TOKEN, role: 'read' as const }], readToken: true, clusterSecret: TEST_CLUSTER_SECRET };
    a = await WorkerProcess.start({ id: 'a1', pageSize: '1MiB', mounts: { data: source }, tls: { cert: server.cert, key: server.key, ca: ca.ca }, auth });
    const remote = `fanouts://${new URL(a.url).host}/data`;
    b = await WorkerProcess.start({ id: 'b1', pageSize: '1MiB', mounts: { data: { uri: remote, token: READ_TOKEN, ca: ca.ca } } });
    noToken = await WorkerProcess.start({ id: 'b9', pageSize: '1MiB', mounts: { data: { uri: remote, ca: ca.ca } } });
  });

  after(async () => {
    await Promise.all([a, b, noToken].filter(Boolean).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
    await ca?.remove();
  });

  test('B reads A through fanouts:// with the mount\'s token and CA', async () => {
    const result = await fanout(['cat', '/data/f.bin', '--endpoint', b.url]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(sha256(result.stdout), sha256(content));
  });

  test('without the token the remote refuses, and the read fails SOURCE_ERROR naming why', async () => {
    const result = await fanout(['cat', '/data/f.bin', '--endpoint', noToken.url, '--json'], { FANOUT_TOKEN: '' });
    assert.notEqual(result.code, 0);
    const error = JSON.parse(result.stdout.toString()).error as { code: string; message: string };
    assert.equal(error.code, 'SOURCE_ERROR', error.message);
    assert.match(error.message, /token|UNAUTHENTICATED|credential/i);
  });
});
