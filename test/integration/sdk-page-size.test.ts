import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient, type StatResult } from '../../src/client/index.js';
import { fanoutJson, sha256 } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { waitFor } from '../harness/ports.js';
import { readAll } from '../harness/streams.js';
import { SyncProcess, currentVersion, treeHashes } from '../harness/release.js';
import { restartWithPageSize, startCluster, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/**
 * The cluster's worker restarts with another pageSize (1 MiB → 2 MiB) under long-running users
 * of the SDK: a `fanout sync` daemon and a program holding one FanoutClient. Before, both kept
 * asking in the page size they started with and every such request was refused
 * (PAGE_SIZE_MISMATCH) until they were restarted: the agent never staged another version.
 */
describe('the cluster changes its page size under a sync daemon and an SDK client', () => {
  let root: string;
  let source: string;
  let etcd: EtcdServer;
  let worker: WorkerProcess;
  let common: string[];
  let agent: SyncProcess;
  let client: FanoutClient;
  const host = () => join(root, 'host');
  const files = { before: randomBytes(5 * MiB + 4321), after: randomBytes(3 * MiB + 17), held: randomBytes(12 * MiB + 777) };
  let held: AsyncGenerator<Buffer[]>;
  const heldHead: Buffer[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-sdk-ps-'));
    source = join(root, 'source');
    await mkdir(join(source, 'app/v1'), { recursive: true });
    await writeFile(join(source, 'app/v1/model.bin'), randomBytes(3 * MiB + 5));
    await writeFile(join(source, 'app/v1/small.txt'), 'v1\n');
    for (const [name, data] of Object.entries(files)) await writeFile(join(source, `${name}.bin`), data);
    etcd = await startEtcd();
    [worker] = await startCluster(1, { mounts: { data: source }, pageSize: '1MiB' });
    common = ['--etcd', etcd.endpoint, '--endpoint', worker!.url];
    await fanoutJson(['release', 'publish', 'app', '/data/app/v1/', '--version', 'v1', '--mount', `data=${source}`, ...common]);
    await fanoutJson(['release', 'promote', 'app', 'v1', '--channel', 'prod', ...common]);
    // Published in 1 MiB pages, promoted after the change.
    await mkdir(join(source, 'app/old'), { recursive: true });
    await writeFile(join(source, 'app/old/model.bin'), randomBytes(4 * MiB + 1234));
    await writeFile(join(source, 'app/old/small.txt'), 'old\n');
    await fanoutJson(['release', 'publish', 'app', '/data/app/old/', '--version', 'old', '--mount', `data=${source}`, ...common]);
    client = new FanoutClient({ endpoint: worker!.url, hedge: 'off' });
  });

  after(async () => {
    await held?.return(undefined);
    await client?.close();
    await agent?.kill();
    await worker?.destroy();
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('before the change: the agent stages v1, the client reads a file and starts another', { timeout: 60_000 }, async () => {
    agent = SyncProcess.start(['app', '--channel', 'prod', '--interval', '1s', ...common], host(), join(root, 'agent.log'));
    await waitFor('the agent on v1', async () => (await currentVersion(host())) === 'v1', 30_000);
    assert.deepEqual(await treeHashes(join(host(), 'current')), await treeHashes(join(source, 'app/v1')));
    assert.equal((await client.cluster()).pageSize, MiB);
    assert.equal(sha256(await readAll(await client.createReadStream('/data/before.bin'))), sha256(files.before));
    // Read on across the change: its first pages (and a window of the next) come in 1 MiB pages.
    held = client.readPages(await client.stat('/data/held.bin'));
    for (let i = 0; i < 2; i++) heldHead.push(...(await held.next()).value!);
  });

  test('after the change, the same client reads whole and right: files read before, unread ones, and the read in flight goes on', { timeout: 60_000 }, async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => void ((w as { code?: string }).code === 'PAGE_SIZE_MISMATCH' && warnings.push(w));
    process.on('warning', onWarning);
    await restartWithPageSize(worker, '2MiB');
    const rest: Buffer[] = [];
    for await (const page of held) rest.push(...page);
    assert.equal(sha256(Buffer.concat([...heldHead, ...rest])), sha256(files.held), 'the read started before the change');
    assert.equal(sha256(await readAll(await client.createReadStream('/data/after.bin'))), sha256(files.after), 'a file not read before');
    assert.equal(sha256(await readAll(await client.createReadStream('/data/before.bin'))), sha256(files.before), 'a file read before');
    const range = await readAll(await client.createReadStream('/data/before.bin', { start: MiB + 3, end: 4 * MiB + 11 }));
    assert.ok(range.equals(files.before.subarray(MiB + 3, 4 * MiB + 11)), 'a range across pages');
    const pages: Buffer[] = [];
    for await (const page of client.readPages((await client.stat('/data/after.bin')) as StatResult)) pages.push(...page);
    assert.equal(sha256(Buffer.concat(pages)), sha256(files.after), 'readPages');
    assert.equal((await client.cluster()).pageSize, 2 * MiB, 'the client says the new page size');
    await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
    process.off('warning', onWarning);
    assert.equal(warnings.length, 1, 'the change is said once');
    assert.match(warnings[0]!.message, /pageSize changed from 1048576 to 2097152 bytes/);
  });

  test('after the change, the running sync agent stages the next release (published in the new page size)', { timeout: 90_000 }, async () => {
    await mkdir(join(source, 'app/v2'), { recursive: true });
    await writeFile(join(source, 'app/v2/model.bin'), randomBytes(5 * MiB + 99));
    await writeFile(join(source, 'app/v2/small.txt'), 'v2\n');
    const published = await fanoutJson<{ pageSize?: number }>(['release', 'publish', 'app', '/data/app/v2/', '--version', 'v2', '--mount', `data=${source}`, ...common]);
    await fanoutJson(['release', 'promote', 'app', 'v2', '--channel', 'prod', ...common]);
    try {
      await waitFor('the agent on v2', async () => (await currentVersion(host())) === 'v2', 45_000);
    } catch (err) {
      const log = await readFile(join(root, 'agent.log'), 'utf8').catch(() => '');
      throw new Error(`${(err as Error).message}; published ${JSON.stringify(published)}; the agent's log:\n${log.split('\n').slice(-15).join('\n')}`);
    }
    assert.deepEqual(await treeHashes(join(host(), 'current')), await treeHashes(join(source, 'app/v2')));
    const log = await readFile(join(root, 'agent.log'), 'utf8');
    assert.equal(log.split('pageSize changed from 1048576 to 2097152 bytes').length - 1, 1, `the agent says the change once:\n${log}`);
    assert.doesNotMatch(log, /sync app\/prod: PAGE_SIZE_MISMATCH/, 'no round failed for it');
  });

  test('after the change, the running agent stages a release published before it (in the old page size), each page checked against the manifest', { timeout: 90_000 }, async () => {
    await fanoutJson(['release', 'promote', 'app', 'old', '--channel', 'prod', ...common]);
    try {
      await waitFor('the agent on the old release', async () => (await currentVersion(host())) === 'old', 45_000);
    } catch (err) {
      const log = await readFile(join(root, 'agent.log'), 'utf8').catch(() => '');
      throw new Error(`${(err as Error).message}; the agent's log:\n${log.split('\n').slice(-8).join('\n')}`);
    }
    assert.deepEqual(await treeHashes(join(host(), 'current')), await treeHashes(join(source, 'app/old')));
  });
});
