import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { fanout, sha256 } from '../harness/cli.js';
import { waitFor } from '../harness/ports.js';
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
  // Bodies must name something (a page key nobody holds is fine).
  { route: '/v1/admin/pin', method: 'POST', body: { keys: ['0123456789abcdef'] } },
  { route: '/v1/admin/unpin', method: 'POST', body: { keys: ['0123456789abcdef'] } },
  { route: '/v1/admin/free', method: 'POST', body: { keys: ['0123456789abcdef'] } },
  { route: '/v1/admin/ttl', method: 'POST', body: { keys: ['0123456789abcdef'], ttlMs: 1000 } },
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

  test('an admin route asked with another method says which it takes (policy answered 404 "no such endpoint")', async () => {
    const policy = await fetch(`${workers[0]!.url}/v1/admin/policy`, { method: 'HEAD', headers: bearer(ADMIN) });
    assert.equal(policy.status, 200, 'HEAD of a GET route');
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const res = await fetch(`${workers[0]!.url}/v1/admin/policy`, { method, headers: bearer(ADMIN) });
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, 400, method);
      assert.equal(body.error.code, 'INVALID_ARGUMENT', method);
      assert.match(body.error.message, /\/v1\/admin\/policy takes GET/, method);
      assert.equal(res.headers.get('allow'), 'GET, HEAD', method);
    }
    for (const c of ADMIN_CALLS.filter((a) => a.method === 'POST')) {
      const res = await fetch(workers[0]!.url + c.route, { method: 'GET', headers: bearer(ADMIN) });
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, 400, c.route);
      assert.equal(body.error.code, 'INVALID_ARGUMENT', c.route);
      assert.equal(res.headers.get('allow'), 'POST', c.route);
    }
    // Still the credentials first: a read token learns nothing of the routes.
    assert.equal((await call(`${workers[0]!.url}/v1/admin/policy`, { method: 'POST', headers: bearer(READ) })).status, 403);
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

/**
 * Runs `fanout worker` until it exits or says it listens (then stops it): a worker refused at start
 * exits on its own, one that starts would otherwise run until killed.
 */
function startOrRefusal(args: string[], env: Record<string, string>): Promise<{ started: boolean; code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [fanoutBin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let started = false;
    proc.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (!started && /listening on/.test(stderr)) {
        started = true;
        proc.kill('SIGTERM');
      }
    });
    proc.once('error', reject);
    proc.once('exit', (code) => resolve({ started, code, stderr }));
  });
}

describe('one token value with two roles', () => {
  test('a read token exported as FANOUT_TOKEN beside a worker: the worker refuses to start (INVALID_CONFIG), not made admin', async () => {
    // Before: the worker started and the read token passed every admin route.
    const source = await sourceWith({ 'f.bin': randomBytes(1000) });
    const root = await mkdtemp(join(tmpdir(), 'fanout-auth-dup-'));
    const config = join(root, 'worker.json');
    try {
      await writeFile(config, JSON.stringify({ id: 'dup', listen: '127.0.0.1:0', dataDir: join(root, 'data'), mounts: { data: source }, auth: { tokens: [{ token: ADMIN, role: 'admin' }, { token: READ, role: 'read' }], clusterSecret: SECRET } }));
      const conflict = await startOrRefusal(['worker', '--config', config], { FANOUT_TOKEN: READ });
      assert.equal(conflict.started, false, conflict.stderr);
      assert.equal(conflict.code, 1);
      assert.match(conflict.stderr, /INVALID_CONFIG: FANOUT_TOKEN .* is also auth\.tokens\.1 with role read/);
      // The same value in the config with both roles is refused too.
      await writeFile(config, JSON.stringify({ id: 'dup', listen: '127.0.0.1:0', dataDir: join(root, 'data'), mounts: { data: source }, auth: { tokens: [{ token: READ, role: 'read' }, { token: READ, role: 'admin' }], clusterSecret: SECRET } }));
      const listedTwice = await startOrRefusal(['worker', '--config', config], { FANOUT_TOKEN: '' });
      assert.equal(listedTwice.started, false, listedTwice.stderr);
      assert.match(listedTwice.stderr, /INVALID_CONFIG: auth\.tokens\.0 and auth\.tokens\.1 are the same token with two roles/);
      // FANOUT_TOKEN equal to a configured admin token is one role: the worker starts.
      await writeFile(config, JSON.stringify({ id: 'dup', listen: '127.0.0.1:0', dataDir: join(root, 'data'), mounts: { data: source }, auth: { tokens: [{ token: ADMIN, role: 'admin' }], clusterSecret: SECRET } }));
      assert.equal((await startOrRefusal(['worker', '--config', config], { FANOUT_TOKEN: ADMIN })).started, true);
    } finally {
      await rm(root, { recursive: true, force: true });
      await rm(source, { recursive: true, force: true });
    }
  });
});
