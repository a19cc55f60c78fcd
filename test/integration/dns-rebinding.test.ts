import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitFor } from '../harness/ports.js';
import { fanoutBin, WorkerProcess } from '../harness/workers.js';

/** A GET to `url` (its address) with `host` as the Host header, as a browser sends it for a page's own name. */
function getWithHost(url: string, host: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const SECRET_FILE = 'the served file, not for other sites\n';

/**
 * DNS rebinding: a web page on attacker.example whose name the attacker then points at 127.0.0.1
 * reads what a local `fanout serve` serves, from the victim's browser (same origin for the
 * browser; reads are open). The browser still sends the page's own name as Host: a worker
 * listening on loopback only answers only Hosts that name this machine.
 */
describe('a worker listening on loopback only and DNS rebinding', () => {
  let root: string;
  let proc: ChildProcess;
  let exited: Promise<void>;
  let api: string;
  let s3: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-rebind-'));
    await mkdir(join(root, 'src'));
    await writeFile(join(root, 'src', 'f.txt'), SECRET_FILE);
    const [port, s3Port] = [await freePort(), await freePort()];
    api = `http://127.0.0.1:${port}`;
    s3 = `http://127.0.0.1:${s3Port}`;
    proc = spawn(process.execPath, [fanoutBin, 'serve', './src', '--listen', `127.0.0.1:${port}`, '--s3-listen', `127.0.0.1:${s3Port}`, '--s3-anonymous', '--log-level', 'warn'], {
      cwd: root,
      env: { ...process.env, XDG_CONFIG_HOME: join(root, 'config'), FANOUT_TOKEN: '' },
      stdio: 'ignore',
    });
    exited = new Promise((r) => proc.once('exit', () => r()));
    await waitFor('fanout serve /healthz', async () => (await fetch(`${api}/healthz`)).ok);
    await waitFor('its S3 gateway', async () => (await fetch(`${s3}/data/f.txt`)).ok);
  });
  after(async () => {
    proc?.kill('SIGKILL');
    await exited;
    await rm(root, { recursive: true, force: true });
  });

  test('a request whose Host is another name is refused (403 FORBIDDEN on the API, AccessDenied on the gateway), before any read', async () => {
    const { port } = new URL(api);
    for (const host of [`attacker.example:${port}`, 'attacker.example', `localhost.attacker.example:${port}`, `127.0.0.1.nip.io:${port}`, `0.0.0.0:${port}`, `[::2]:${port}`]) {
      for (const path of ['/v1/data/data/f.txt', '/v1/stat/data/f.txt', '/ui', '/healthz']) {
        const res = await getWithHost(`${api}${path}`, host);
        assert.equal(res.status, 403, `${host} ${path}: ${res.body}`);
        assert.equal(res.headers['x-fanout-error'], 'FORBIDDEN', `${host} ${path}`);
        assert.match(res.body, /"code":"FORBIDDEN".*loopback/, `${host} ${path}`);
        assert.doesNotMatch(res.body, /not for other sites/);
      }
      const s3Answer = await getWithHost(`${s3}/data/f.txt`, host.replace(port, new URL(s3).port));
      assert.equal(s3Answer.status, 403, `${host}: ${s3Answer.body}`);
      assert.match(s3Answer.body, /<Code>AccessDenied<\/Code>.*loopback/s, host);
    }
  });

  test('Hosts that name this machine are served: localhost, *.localhost, 127.x.x.x, [::1], with or without a port', async () => {
    const { port } = new URL(api);
    for (const host of [`127.0.0.1:${port}`, '127.0.0.1', `127.1.2.3:${port}`, `localhost:${port}`, 'LOCALHOST', `app.localhost:${port}`, `[::1]:${port}`]) {
      const res = await getWithHost(`${api}/v1/data/data/f.txt`, host);
      assert.equal(res.status, 200, `${host}: ${res.body}`);
      assert.equal(res.body, SECRET_FILE, host);
    }
    const s3Port = new URL(s3).port;
    for (const host of [`127.0.0.1:${s3Port}`, `localhost:${s3Port}`]) {
      const res = await getWithHost(`${s3}/data/f.txt`, host);
      assert.equal(res.status, 200, `${host}: ${res.body}`);
      assert.equal(res.body, SECRET_FILE, host);
    }
    // Virtual-hosted style under localhost: the bucket is the first label.
    const virtual = await getWithHost(`${s3}/f.txt`, `data.localhost:${s3Port}`);
    assert.equal(virtual.status, 200, virtual.body);
    assert.equal(virtual.body, SECRET_FILE);
  });
});

describe('a worker listening on all addresses (a deliberate network service)', () => {
  let source: string;
  let worker: WorkerProcess;
  let s3: string;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-rebind-any-'));
    await writeFile(join(source, 'f.txt'), SECRET_FILE);
    const [port, s3Port] = [await freePort(), await freePort()];
    s3 = `http://127.0.0.1:${s3Port}`;
    worker = await WorkerProcess.start({ id: 'any', listen: `0.0.0.0:${port}`, mounts: { data: source }, gateway: { listen: `0.0.0.0:${s3Port}`, anonymous: true } }, port);
  });
  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
  });

  test('answers any Host, as before', async () => {
    const res = await getWithHost(`${worker.url}/v1/data/data/f.txt`, 'cache.example.com:7450');
    assert.equal(res.status, 200, res.body);
    assert.equal(res.body, SECRET_FILE);
    const s3Answer = await getWithHost(`${s3}/data/f.txt`, 'cache.example.com:7451');
    assert.equal(s3Answer.status, 200, s3Answer.body);
  });
});
