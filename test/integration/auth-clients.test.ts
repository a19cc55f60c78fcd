import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanout } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { freePort, waitFor } from '../harness/ports.js';
import { treeHashes } from '../harness/release.js';
import { fanoutBin, WorkerProcess } from '../harness/workers.js';

/** Credentials on the client side: the sync agent and release commands, and serve's zero-configuration admin token. */

const MiB = 1024 * 1024;
const READ = 'auth-test-read-token-00002';
const SECRET = 'auth-test-cluster-secret-0003';

async function status(url: string, init: RequestInit = {}): Promise<number> {
  const res = await fetch(url, init);
  await res.arrayBuffer();
  return res.status;
}

describe('releases on a cluster whose reads need a token', () => {
  let etcd: EtcdServer;
  let worker: WorkerProcess;
  let root: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-auth-rel-'));
    await mkdir(join(root, 'source', 'rel', 'v1'), { recursive: true });
    await writeFile(join(root, 'source', 'rel', 'v1', 'a.bin'), randomBytes(2 * MiB + 9));
    await writeFile(join(root, 'source', 'rel', 'v1', 'b.txt'), 'hello\n');
    etcd = await startEtcd();
    worker = await WorkerProcess.start({
      id: 'rel',
      mounts: { data: join(root, 'source') },
      pageSize: '1MiB',
      auth: { tokens: [{ token: READ, role: 'read' }], readToken: true, clusterSecret: SECRET },
    });
  });
  after(async () => {
    await worker?.destroy();
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('publish and the sync agent send FANOUT_TOKEN; without it the agent is refused', async () => {
    const common = ['--etcd', etcd.endpoint, '--endpoint', worker.url];
    const withToken = { FANOUT_TOKEN: READ };
    const published = await fanout(['release', 'publish', 'rel', '/data/rel/v1/', '--version', 'v1', '--mount', `data=${join(root, 'source')}`, ...common], withToken);
    assert.equal(published.code, 0, published.stderr);
    const promoted = await fanout(['release', 'promote', 'rel', 'v1', '--channel', 'prod', ...common], withToken);
    assert.equal(promoted.code, 0, promoted.stderr);

    // A host of its own: under the hostname, its record (another directory) would hold the next run for its 15 s lease.
    const refused = await fanout(['sync', 'rel', '--channel', 'prod', '--dir', join(root, 'refused'), '--host', 'refused', '--once', '--json', ...common], { FANOUT_TOKEN: '' });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stdout.toString() + refused.stderr, /UNAUTHENTICATED/);

    const synced = await fanout(['sync', 'rel', '--channel', 'prod', '--dir', join(root, 'host'), '--once', ...common], withToken);
    assert.equal(synced.code, 0, synced.stderr);
    assert.deepEqual(await treeHashes(join(root, 'host', 'current')), await treeHashes(join(root, 'source', 'rel', 'v1')));
  });
});

describe('fanout serve', () => {
  let root: string;
  let proc: ChildProcess;
  let exited: Promise<void>;
  let url: string;
  const data = randomBytes(MiB + 3);
  const owner = () => ({ XDG_CONFIG_HOME: join(root, 'owner-config'), FANOUT_TOKEN: '' });

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-auth-serve-'));
    await mkdir(join(root, 'src'));
    await mkdir(join(root, 'elsewhere'));
    await writeFile(join(root, 'src', 'f.bin'), data);
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    // Started from its own directory; the CLI below runs from another one.
    proc = spawn(process.execPath, [fanoutBin, 'serve', './src', '--listen', `127.0.0.1:${port}`, '--s3-listen', 'off', '--log-level', 'warn'], {
      cwd: root,
      env: { ...process.env, ...owner() },
      stdio: 'ignore',
    });
    exited = new Promise((r) => proc.once('exit', () => r()));
    await waitFor('fanout serve /healthz', async () => (await fetch(`${url}/healthz`)).ok);
    // serve publishes its token once listening (it needs its address), just before its banner.
    await waitFor('the published admin token', async () => (await readdir(join(root, 'owner-config', 'fanout', 'tokens'))).length > 0);
  });
  after(async () => {
    proc.kill('SIGKILL');
    await exited;
    await rm(root, { recursive: true, force: true });
  });

  test('refuses admin calls without its token, while reads stay open', async () => {
    assert.equal(await status(`${url}/v1/admin/pin`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"keys":[]}' }), 401);
    assert.equal(await status(`${url}/v1/stat/data/f.bin`), 200);
  });

  test("keeps its token readable by its user only, and the same user's CLI uses it with no configuration", async () => {
    const tokens = join(root, 'owner-config', 'fanout', 'tokens');
    const files = await readdir(tokens);
    assert.ok(files.length > 0);
    for (const f of files) assert.equal((await stat(join(tokens, f))).mode & 0o777, 0o600, f);
    assert.equal((await stat(join(root, '.fanout', 'admin.token'))).mode & 0o777, 0o600);

    const loaded = await runCli(['load', '/data/f.bin', '--endpoint', url, '--json'], join(root, 'elsewhere'), owner());
    assert.equal(loaded.code, 0, loaded.stderr + loaded.stdout);
    const pinned = await runCli(['pin', '/data/f.bin', '--endpoint', url.replace('127.0.0.1', 'localhost')], join(root, 'elsewhere'), owner());
    assert.equal(pinned.code, 0, pinned.stderr + pinned.stdout);
  });

  test('another user (who cannot read that token) is refused', async () => {
    const other = await runCli(['free', '/data/f.bin', '--endpoint', url], root, { XDG_CONFIG_HOME: join(root, 'other-config'), FANOUT_TOKEN: '' });
    assert.equal(other.code, 1);
    assert.match(other.stderr, /UNAUTHENTICATED/);
  });

  test('takes its published token away when it stops', async () => {
    proc.kill('SIGTERM');
    await exited;
    assert.deepEqual(await readdir(join(root, 'owner-config', 'fanout', 'tokens')), []);
  });
});

function runCli(args: string[], cwd: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fanoutBin, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
