import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCa, type TestCa } from '../harness/certs.js';
import { fanout, sha256 } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { forceUnmount, MountProcess } from '../harness/mount.js';
import { treeHashes } from '../harness/release.js';
import { waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';
import { FanoutClient } from '../../src/client/index.js';

const MiB = 1024 * 1024;

/**
 * Everything over TLS at once, as an operator would deploy it: etcd with client certificates,
 * two https workers registered through it, a release published, promoted and synced by the
 * CLI, and a FUSE mount, each client given only the CA (and etcd's client certificate).
 */
describe('the whole stack over TLS: etcd, workers, releases, sync and mount', { timeout: 180_000 }, () => {
  let ca: TestCa;
  let etcd: EtcdServer;
  let workers: WorkerProcess[] = [];
  let root: string;
  let source: string;
  let common: string[];
  let model: Buffer;

  before(async () => {
    ca = await makeCa('fanout-stack');
    const etcdPair = await ca.issue('etcd');
    const client = await ca.issue('client');
    const server = await ca.issue('worker');
    etcd = await startEtcd({ tls: { cert: etcdPair.cert, key: etcdPair.key, ca: ca.ca, clientCertAuth: true, client } });
    root = await mkdtemp(join(tmpdir(), 'fanout-stack-'));
    source = join(root, 'source');
    model = randomBytes(3 * MiB + 77);
    await mkdir(join(source, 'm/v1'), { recursive: true });
    await writeFile(join(source, 'm/v1/model.bin'), model);
    await writeFile(join(source, 'm/v1/config.json'), '{"layers":2}\n');
    workers = await Promise.all(
      ['s1', 's2'].map((id) =>
        WorkerProcess.start({
          id,
          pageSize: '1MiB',
          mounts: { data: source },
          tls: { cert: server.cert, key: server.key, ca: ca.ca },
          membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3, tls: { ca: ca.ca, cert: client.cert, key: client.key } } },
        }),
      ),
    );
    const sdk = new FanoutClient({ endpoint: workers.map((w) => w.url), ca: ca.ca });
    try {
      await waitFor('both workers in the membership', async () => (await sdk.cluster(true)).members.length === 2);
    } finally {
      await sdk.close();
    }
    common = ['--endpoint', workers[0]!.url, '--ca', ca.ca, '--etcd', etcd.endpoint, '--etcd-ca', ca.ca, '--etcd-cert', client.cert, '--etcd-key', client.key];
  });

  after(async () => {
    await Promise.all(workers.map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
    await ca?.remove();
  });

  test('a release is published, promoted and synced with --ca and etcd client certificates', async () => {
    const run = async (args: string[]) => {
      const result = await fanout([...args, ...common, '--json']);
      assert.equal(result.code, 0, `fanout ${args.join(' ')}: ${result.stdout}${result.stderr}`);
      return JSON.parse(result.stdout.toString());
    };
    await run(['release', 'publish', 'm', '/data/m/v1/', '--version', 'v1', '--mount', `data=${source}`]);
    await run(['release', 'promote', 'm', 'v1', '--channel', 'prod']);
    const dir = join(root, 'host');
    const sync = await fanout(['sync', 'm', '--channel', 'prod', '--once', '--dir', dir, '--host', 'h1', ...common]);
    assert.equal(sync.code, 0, sync.stderr);
    assert.deepEqual(await treeHashes(join(dir, 'current')), await treeHashes(join(source, 'm/v1')));
    // Without the etcd client certificate the same command is refused.
    const refused = await fanout(['release', 'list', 'm', '--endpoint', workers[0]!.url, '--ca', ca.ca, '--etcd', etcd.endpoint, '--etcd-ca', ca.ca, '--json']);
    assert.notEqual(refused.code, 0);
    assert.equal(JSON.parse(refused.stdout.toString()).error.code, 'ETCD_UNAVAILABLE');
  });

  test('a FUSE mount with --ca reads a file intact', async (t) => {
    if (!(await readFile('/dev/fuse').then(() => true, (err: NodeJS.ErrnoException) => err.code !== 'ENOENT'))) {
      t.skip('no /dev/fuse on this machine');
      return;
    }
    const mnt = join(root, 'mnt');
    await mkdir(mnt, { recursive: true });
    const mount = await MountProcess.start(mnt, workers[1]!.url, '--ca', ca.ca);
    try {
      assert.equal(sha256(await readFile(join(mnt, 'data/m/v1/model.bin'))), sha256(model));
    } finally {
      await mount.signal('SIGTERM');
      await forceUnmount(mnt);
    }
  });
});
