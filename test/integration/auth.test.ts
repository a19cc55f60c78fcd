import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { fanout, sha256 } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { treeHashes } from '../harness/release.js';
import { freePort, waitFor } from '../harness/ports.js';
import { fanoutBin, startCluster, WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
const ADMIN = 'auth-test-admin-token-0001';
const READ = 'auth-test-read-token-00002';
const SECRET = 'auth-test-cluster-secret-0003';
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

interface Answer {
  status: number;
  code: string | undefined;
  wwwAuthenticate: string | null;
}

async function call(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, init);
  const text = await res.text();
  let code: string | undefined;
  try {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  } catch {
    code = undefined;
  }
  return { status: res.status, code, wwwAuthenticate: res.headers.get('www-authenticate') };
}

/** Every admin route with a body it accepts. */
const ADMIN_CALLS: { route: string; method: string; body?: unknown }[] = [
  { route: '/v1/admin/load', method: 'POST', body: { pages: [] } },
  { route: '/v1/admin/pin', method: 'POST', body: { keys: [] } },
  { route: '/v1/admin/unpin', method: 'POST', body: { keys: [] } },
  { route: '/v1/admin/free', method: 'POST', body: { keys: [] } },
  { route: '/v1/admin/ttl', method: 'POST', body: { keys: [], ttlMs: 1000 } },
  { route: '/v1/admin/policy', method: 'GET' },
];

function adminRequest(c: (typeof ADMIN_CALLS)[number], headers: Record<string, string>): RequestInit {
  return c.body === undefined
    ? { method: c.method, headers }
    : { method: c.method, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(c.body) };
}

async function sourceWith(files: Record<string, Buffer>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-auth-src-'));
  for (const [name, data] of Object.entries(files)) await writeFile(join(dir, name), data);
  return dir;
}

describe('admin calls and peer-only headers on a two-worker cluster with tokens', () => {
  let workers: WorkerProcess[];
  let source: string;
  const data = randomBytes(4 * MiB + 100);

  before(async () => {
    source = await sourceWith({ 'f.bin': data });
    workers = await startCluster(2, {
      mounts: { data: source },
      pageSize: '1MiB',
      auth: { tokens: [{ token: ADMIN, role: 'admin' }, { token: READ, role: 'read' }], clusterSecret: SECRET },
    });
  });
  after(async () => {
    await Promise.all(workers.map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  test('every admin route refuses no token (401) and a read token (403), and accepts an admin token', async () => {
    for (const c of ADMIN_CALLS) {
      const none = await call(workers[0]!.url + c.route, adminRequest(c, {}));
      assert.equal(none.status, 401, c.route);
      assert.equal(none.code, 'UNAUTHENTICATED', c.route);
      assert.match(none.wwwAuthenticate ?? '', /^Bearer/, c.route);
      const unknown = await call(workers[0]!.url + c.route, adminRequest(c, bearer('not-a-token-of-this-cluster')));
      assert.equal(unknown.status, 401, c.route);
      const read = await call(workers[0]!.url + c.route, adminRequest(c, bearer(READ)));
      assert.equal(read.status, 403, c.route);
      assert.equal(read.code, 'FORBIDDEN', c.route);
      const admin = await call(workers[0]!.url + c.route, adminRequest(c, bearer(ADMIN)));
      assert.equal(admin.status, 200, `${c.route}: ${admin.code}`);
    }
  });

  test('data reads stay open without readToken; /healthz is always open', async () => {
    for (const path of ['/healthz', '/metrics', '/v1/cluster', '/v1/status', '/v1/stat/data/f.bin', '/v1/list/data/', '/v1/data/data/f.bin']) {
      assert.equal((await call(workers[0]!.url + path)).status, 200, path);
    }
  });

  test('peer-only headers from a client are refused before any source read, whatever else it holds', async () => {
    const info = (await (await fetch(`${workers[0]!.url}/v1/stat/data/f.bin`)).json()) as { version: string; size: number };
    const page = `/v1/page/data/f.bin?v=${encodeURIComponent(info.version)}&size=${info.size}&i=0`;
    const readsBefore = (await workers[0]!.metrics()).fanout_source_reads_total ?? 0;
    const forged: Record<string, string>[] = [
      { 'x-fanout-direct': '1' },
      { 'x-fanout-direct': '1', ...bearer(ADMIN) },
      { 'x-fanout-direct': '1', 'x-fanout-peer': SECRET },
      { 'x-fanout-peer': 'f'.repeat(64) },
      { 'x-fanout-peer': SECRET },
    ];
    for (const headers of forged) {
      const answer = await call(workers[0]!.url + page, { headers });
      assert.equal(answer.status, 403, JSON.stringify(headers));
      assert.equal(answer.code, 'FORBIDDEN');
    }
    assert.equal((await workers[0]!.metrics()).fanout_source_reads_total ?? 0, readsBefore);
  });

  test('workers fill pages from each other with the peer credential: the source is read once per page', async () => {
    const info = (await (await fetch(`${workers[0]!.url}/v1/stat/data/f.bin`)).json()) as { version: string; size: number };
    const pages = Math.ceil(info.size / MiB);
    // Each page asked of both workers: one of them does not own it and fills it from its owner
    // with x-fanout-direct and the peer credential; a refused credential would fail the read.
    for (let i = 0; i < pages; i++) {
      for (const w of workers) {
        const res = await fetch(`${w.url}/v1/page/data/f.bin?v=${encodeURIComponent(info.version)}&size=${info.size}&i=${i}`);
        const body = Buffer.from(await res.arrayBuffer());
        assert.equal(res.status, 200, body.toString().slice(0, 200));
        assert.deepEqual(body, data.subarray(i * MiB, Math.min(info.size, (i + 1) * MiB)));
      }
    }
    const metrics = await Promise.all(workers.map((w) => w.metrics()));
    const sourceReads = metrics.reduce((sum, m) => sum + (m.fanout_source_reads_total ?? 0), 0);
    const peerBytes = metrics.reduce((sum, m) => sum + (m.fanout_peer_bytes_total ?? 0), 0);
    assert.equal(sourceReads, pages);
    assert.ok(peerBytes > 0, 'some pages came from a peer');
  });
});

describe('a two-worker cluster without a cluster secret', () => {
  let workers: WorkerProcess[];
  let source: string;
  const data = randomBytes(3 * MiB);

  before(async () => {
    source = await sourceWith({ 'f.bin': data });
    workers = await startCluster(2, { mounts: { data: source }, pageSize: '1MiB', auth: { tokens: [{ token: ADMIN, role: 'admin' }] } });
  });
  after(async () => {
    await Promise.all(workers.map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  test('refuses x-fanout-direct from everyone, fills pages by the ordinary path, and says why at start', async () => {
    const info = (await (await fetch(`${workers[0]!.url}/v1/stat/data/f.bin`)).json()) as { version: string; size: number };
    const page = (i: number) => `/v1/page/data/f.bin?v=${encodeURIComponent(info.version)}&size=${info.size}&i=${i}`;
    assert.equal((await call(workers[0]!.url + page(0), { headers: { 'x-fanout-direct': '1' } })).status, 403);
    for (let i = 0; i < 3; i++) {
      for (const w of workers) {
        const res = await fetch(w.url + page(i));
        const body = Buffer.from(await res.arrayBuffer());
        assert.equal(res.status, 200, body.toString().slice(0, 200));
        assert.deepEqual(body, data.subarray(i * MiB, (i + 1) * MiB));
      }
    }
    const metrics = await Promise.all(workers.map((w) => w.metrics()));
    assert.equal(metrics.reduce((sum, m) => sum + (m.fanout_source_reads_total ?? 0), 0), 3);
    await waitFor('a warning about the missing secret in every worker log', async () => {
      const logs = await Promise.all(workers.map((w) => readFile(join(w.dir, 'worker.log'), 'utf8')));
      return logs.every((log) => log.includes('no cluster secret'));
    });
  });
});

describe('readToken: true', () => {
  let worker: WorkerProcess;
  let source: string;
  const data = randomBytes(2 * MiB + 5);

  before(async () => {
    source = await sourceWith({ 'f.bin': data });
    worker = await WorkerProcess.start({
      id: 'closed',
      mounts: { data: source },
      pageSize: '1MiB',
      auth: { tokens: [{ token: ADMIN, role: 'admin' }, { token: READ, role: 'read' }], readToken: true, clusterSecret: SECRET },
    });
  });
  after(async () => {
    await worker.destroy();
    await rm(source, { recursive: true, force: true });
  });

  const reads = () => ['/metrics', '/v1/cluster', '/v1/status', '/v1/stat/data/f.bin', '/v1/list/', '/v1/list/data/', '/v1/data/data/f.bin'];

  test('data reads need a read or admin token; /healthz stays open', async () => {
    const info = (await (await fetch(`${worker.url}/v1/stat/data/f.bin`, { headers: bearer(READ) })).json()) as { version: string; size: number };
    const paths = [...reads(), `/v1/page/data/f.bin?v=${encodeURIComponent(info.version)}&size=${info.size}&i=0`];
    for (const path of paths) {
      const none = await call(worker.url + path);
      assert.equal(none.status, 401, path);
      assert.equal(none.code, 'UNAUTHENTICATED', path);
      assert.equal((await call(worker.url + path, { headers: bearer('not-a-token-of-this-cluster') })).status, 401, path);
      assert.equal((await call(worker.url + path, { headers: bearer(READ) })).status, 200, path);
      assert.equal((await call(worker.url + path, { headers: bearer(ADMIN) })).status, 200, path);
    }
    assert.equal((await call(worker.url + '/healthz')).status, 200);
  });

  test('the CLI sends FANOUT_TOKEN, and is refused without it', async () => {
    const refused = await fanout(['cat', '/data/f.bin', '--endpoint', worker.url], { FANOUT_TOKEN: '' });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /UNAUTHENTICATED/);
    const ok = await fanout(['cat', '/data/f.bin', '--endpoint', worker.url], { FANOUT_TOKEN: READ });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(sha256(ok.stdout), sha256(data));
  });

  test('the SDK sends its token option, else FANOUT_TOKEN', async () => {
    const readAll = async (client: FanoutClient) => {
      try {
        const chunks: Buffer[] = [];
        for await (const chunk of await client.createReadStream('/data/f.bin')) chunks.push(chunk as Buffer);
        return Buffer.concat(chunks);
      } finally {
        await client.close();
      }
    };
    const saved = process.env.FANOUT_TOKEN;
    try {
      delete process.env.FANOUT_TOKEN;
      await assert.rejects(readAll(new FanoutClient({ endpoint: worker.url })), { code: 'UNAUTHENTICATED' });
      assert.deepEqual(await readAll(new FanoutClient({ endpoint: worker.url, token: READ })), data);
      process.env.FANOUT_TOKEN = READ;
      assert.deepEqual(await readAll(new FanoutClient({ endpoint: worker.url })), data);
    } finally {
      if (saved === undefined) delete process.env.FANOUT_TOKEN;
      else process.env.FANOUT_TOKEN = saved;
    }
  });
});

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

    const refused = await fanout(['sync', 'rel', '--channel', 'prod', '--dir', join(root, 'refused'), '--once', '--json', ...common], { FANOUT_TOKEN: '' });
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
    const answer = await call(`${url}/v1/admin/pin`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"keys":[]}' });
    assert.equal(answer.status, 401);
    assert.equal((await call(`${url}/v1/stat/data/f.bin`)).status, 200);
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
