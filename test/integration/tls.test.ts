import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createServer as createHttpsServer } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { pino } from 'pino';
import { Agent, request } from 'undici';
import { FanoutClient } from '../../src/client/index.js';
import { ManualClock } from '../../src/core/clock.js';
import { FanoutError } from '../../src/core/errors.js';
import { parseWorkerConfig } from '../../src/lib/config/index.js';
import { ConnectionPool } from '../../src/lib/leanhttp/index.js';
import { DEFAULT_TLS_RELOAD_MS, DEFERRED_EXTRA_CA } from '../../src/lib/tls/index.js';
import { Worker } from '../../src/worker/worker.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import type { Member } from '../../src/core/types.js';
import { makeCa, type TestCa } from '../harness/certs.js';
import { executableEnv, fanout, sha256 } from '../harness/cli.js';
import { freePort, waitFor } from '../harness/ports.js';
import { fanoutBin, startCluster, type WorkerProcess } from '../harness/workers.js';

const PAGE = 1024 * 1024;

/** The serial number of the certificate a TLS server presents (no verification: we only look). */
function servedSerial(url: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: hostname, port: Number(port), rejectUnauthorized: false }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(serial.toUpperCase().replace(/^0+/, ''));
    });
    socket.once('error', reject);
  });
}

async function getBytes(url: string, dispatcher: Agent): Promise<{ status: number; body: Buffer }> {
  const res = await request(url, { dispatcher });
  return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()) };
}

describe('TLS: https workers and their clients (SDK, CLI, peers)', { timeout: 120_000 }, () => {
  let ca: TestCa;
  let wrongCa: TestCa;
  let source: string;
  let content: Buffer;
  let workers: WorkerProcess[];
  let trusting: Agent;

  before(async () => {
    ca = await makeCa('fanout-tls');
    wrongCa = await makeCa('fanout-other');
    const server = await ca.issue('server');
    source = await mkdtemp(join(tmpdir(), 'fanout-tls-src-'));
    content = randomBytes(6 * PAGE + 12345);
    await writeFile(join(source, 'f.bin'), content);
    workers = await startCluster(2, {
      pageSize: '1MiB',
      mounts: { data: source },
      tls: { cert: server.cert, key: server.key, ca: ca.ca },
    });
    trusting = new Agent({ connect: { ca: await readFile(ca.ca) } });
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await trusting?.close();
    await rm(source, { recursive: true, force: true });
    await ca?.remove();
    await wrongCa?.remove();
  });

  test('workers serve https, and the SDK with the right CA reads a file intact', async () => {
    assert.match(workers[0]!.url, /^https:\/\//);
    const client = new FanoutClient({ endpoint: workers[0]!.url, ca: ca.ca });
    try {
      const info = await client.cluster(true);
      assert.ok(info.members.every((m) => m.url.startsWith('https://')), 'members advertise https URLs');
      const stream = await client.createReadStream('/data/f.bin');
      const chunks: Buffer[] = [];
      for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
      assert.equal(sha256(Buffer.concat(chunks)), sha256(content));
    } finally {
      await client.close();
    }
  });

  test('two workers fill pages from each other over TLS (a range read through one worker gets the other\'s pages)', async () => {
    const [w1, w2] = workers;
    const before = await served(w2!);
    const { status, body } = await getBytes(`${w1!.url}/v1/data/data/f.bin`, trusting);
    assert.equal(status, 200);
    assert.equal(sha256(body), sha256(content));
    const after = await served(w2!);
    assert.ok(after > before, `worker 2 served pages to worker 1 over https (${before} → ${after} bytes)`);
  });

  test('the CLI with --ca (or FANOUT_CA) reads a file; without it, it is refused with a certificate error', async () => {
    const url = workers[1]!.url;
    const ok = await fanout(['cat', '/data/f.bin', '--endpoint', url, '--ca', ca.ca]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(sha256(ok.stdout), sha256(content));
    const viaEnv = await fanout(['stat', '/data/f.bin', '--endpoint', url, '--json'], { FANOUT_CA: ca.ca });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.equal(JSON.parse(viaEnv.stdout.toString()).size, content.length);
    const wrong = await fanout(['cat', '/data/f.bin', '--endpoint', url, '--ca', wrongCa.ca]);
    assert.notEqual(wrong.code, 0);
    assert.equal(wrong.stdout.length, 0);
    assert.match(wrong.stderr, /certificate/i);
    const none = await fanout(['stat', '/data/f.bin', '--endpoint', url], { FANOUT_CA: '' });
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /certificate/i);
  });

  test('NODE_EXTRA_CA_CERTS naming the CA is trusted by the CLI run as an executable (the launcher keeps it from Node), on the quick path and through commander', async () => {
    const url = workers[1]!.url;
    const dir = await mkdtemp(join(tmpdir(), 'fanout-extra-ca-'));
    // The executable's own `node` is this one; FANOUT_CA empty: the CA comes from the variable only.
    const env = executableEnv({ FANOUT_CA: '', NODE_OPTIONS: '' });
    const cli = (args: string[], extraCa: string) =>
      new Promise<{ code: number; stdout: Buffer; stderr: string }>((resolve) => {
        execFile(fanoutBin, [args[0]!, '--endpoint', url, ...args.slice(1)], { env: { ...env, NODE_EXTRA_CA_CERTS: extraCa }, encoding: 'buffer', maxBuffer: 64 * PAGE }, (err, stdout, stderr) =>
          resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr: stderr.toString() }),
        );
      });
    try {
      const cat = await cli(['cat', '/data/f.bin'], ca.ca);
      assert.equal(cat.code, 0, cat.stderr);
      assert.equal(sha256(cat.stdout), sha256(content));
      const stat = await cli(['stat', '/data/f.bin', '--json'], ca.ca);
      assert.equal(stat.code, 0, stat.stderr);
      assert.equal(JSON.parse(stat.stdout.toString()).size, content.length);
      const copy = await cli(['cp', '/data/f.bin', join(dir, 'f.bin'), '--no-progress'], ca.ca);
      assert.equal(copy.code, 0, copy.stderr);
      assert.equal(sha256(await readFile(join(dir, 'f.bin'))), sha256(content));
      // `--` is left to commander by the quick parser: main's code, in the same process.
      const listed = await cli(['ls', '--json', '--', '/data/'], ca.ca);
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stdout.toString(), /f\.bin/);
      // The system's store alone does not trust the test CA: the variable is what made the reads work.
      const refused = await cli(['stat', '/data/f.bin'], '');
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /certificate/i);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a lean connection pool without a CA of its own (etcd\'s JSON client) trusts the NODE_EXTRA_CA_CERTS file the launcher deferred', async () => {
    const timeouts = { connectMs: 5000, firstByteMs: 5000, idleMs: 5000 };
    const status = async () => {
      const pool = new ConnectionPool(workers[0]!.url, { connections: 1, timeouts });
      try {
        const response = await pool.get('/v1/cluster', {});
        for await (const _ of response.body);
        return response.statusCode;
      } finally {
        pool.destroy();
      }
    };
    const processSlots = process as unknown as Record<symbol, unknown>;
    processSlots[DEFERRED_EXTRA_CA] = ca.ca;
    try {
      assert.equal(await status(), 200);
    } finally {
      delete processSlots[DEFERRED_EXTRA_CA];
    }
    await assert.rejects(status(), (err: Error & { code?: string }) => /CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(`${err.code} ${err.message}`), 'Node\'s store alone does not trust the test CA');
  });

  test('the SDK with a wrong CA is refused with WORKER_UNAVAILABLE naming the certificate', async () => {
    const client = new FanoutClient({ endpoint: workers[0]!.url, ca: await readFile(wrongCa.ca) });
    try {
      await assert.rejects(client.stat('/data/f.bin'), (err: unknown) => {
        assert.ok(err instanceof FanoutError);
        assert.equal(err.code, 'WORKER_UNAVAILABLE');
        assert.match(err.message, /certificate/i);
        return true;
      });
    } finally {
      await client.close();
    }
  });

  async function served(w: WorkerProcess): Promise<number> {
    const { body } = await getBytes(`${w.url}/metrics`, trusting);
    let total = 0;
    for (const line of body.toString().split('\n')) {
      const match = /^fanout_bytes_served_total(?:\{[^}]*\})? ([0-9.e+]+)$/.exec(line);
      if (match) total += Number(match[1]);
    }
    return total;
  }
});

describe('an https worker and its S3 gateway: clients, awscli, certificate rotation', { timeout: 60_000 }, () => {
  let ca: TestCa;
  let dir: string;
  let worker: Worker;
  let clock: ManualClock;
  const logLines: string[] = [];

  before(async () => {
    ca = await makeCa('fanout-rotate');
    dir = await mkdtemp(join(tmpdir(), 'fanout-rotate-'));
    await writeFile(join(dir, 'f.bin'), 'hello');
    await ca.issue('first', { serial: 'A1', into: { cert: join(dir, 'api.crt'), key: join(dir, 'api.key') } });
    clock = new ManualClock(Date.now());
    const [port, gatewayPort] = [await freePort(), await freePort()];
    const config = parseWorkerConfig({
      listen: `127.0.0.1:${port}`,
      dataDir: join(dir, 'data'),
      mounts: { data: dir },
      // ca: the worker reaches its own API (and peers) over https for cache fills.
      tls: { cert: join(dir, 'api.crt'), key: join(dir, 'api.key'), ca: ca.ca },
      gateway: { listen: `127.0.0.1:${gatewayPort}`, anonymous: true },
    });
    const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (logLines.push(chunk.toString()), done()) });
    worker = new Worker(config, { clock, logger: pino({ level: 'info' }, sink) });
    await worker.start();
  });

  after(async () => {
    await worker?.stop();
    await rm(dir, { recursive: true, force: true });
    await ca?.remove();
  });

  test('the API and the S3 gateway serve https with the configured certificate', async () => {
    assert.match(worker.url, /^https:\/\//);
    assert.match(worker.gateway!.url, /^https:\/\//);
    assert.equal(await servedSerial(worker.url), 'A1');
    assert.equal(await servedSerial(worker.gateway!.url), 'A1');
    const agent = new Agent({ connect: { ca: await readFile(ca.ca) } });
    try {
      const { status, body } = await getBytes(`${worker.gateway!.url}/data/f.bin`, agent);
      assert.equal(status, 200);
      assert.equal(body.toString(), 'hello');
    } finally {
      await agent.close();
    }
    const other = await makeCa('fanout-untrusted');
    const untrusting = new Agent({ connect: { ca: await readFile(other.ca) } });
    try {
      for (const url of [worker.url, worker.gateway!.url]) {
        await assert.rejects(getBytes(`${url}/data/f.bin`, untrusting), (err: Error & { code?: string }) => /CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(err.code ?? ''));
      }
    } finally {
      await untrusting.close();
      await other.remove();
    }
  });

  test('awscli reads through the https gateway with --ca-bundle and refuses it with another CA', async () => {
    const aws = (bundle: string) =>
      new Promise<{ code: number; stdout: Buffer; stderr: string }>((resolve) => {
        execFile(
          'aws',
          ['s3', 'cp', 's3://data/f.bin', '-', '--endpoint-url', worker.gateway!.url, '--ca-bundle', bundle, '--no-sign-request', '--region', 'us-east-1'],
          { encoding: 'buffer', env: { ...process.env, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' } },
          (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr: stderr.toString() }),
        );
      });
    const ok = await aws(ca.ca);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.toString(), 'hello');
    const other = await makeCa('fanout-aws-other');
    try {
      const refused = await aws(other.ca);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /certificate|SSL/i);
    } finally {
      await other.remove();
    }
  });

  test('replaced certificate files are served to new connections after the next check', async () => {
    await ca.issue('second', { serial: 'B2', into: { cert: join(dir, 'api.crt'), key: join(dir, 'api.key') } });
    await clock.advance(DEFAULT_TLS_RELOAD_MS);
    await waitFor('the new certificate to be served', async () => (await servedSerial(worker.url)) === 'B2');
    await waitFor('the gateway to serve the new certificate', async () => (await servedSerial(worker.gateway!.url)) === 'B2');
  });

  test('a bad new pair (key of another certificate, then garbage) is logged and the previous certificate kept', async () => {
    const other = await ca.issue('third', { serial: 'C3' });
    await copyFile(other.key, join(dir, 'api.key')); // the key no longer fits api.crt (B2)
    const warned = logLines.length;
    await clock.advance(DEFAULT_TLS_RELOAD_MS);
    await waitFor('a warning about the refused pair', async () => logLines.slice(warned).some((l) => l.includes('new TLS certificate not loaded')));
    assert.equal(await servedSerial(worker.url), 'B2');
    await writeFile(join(dir, 'api.crt'), 'not a certificate');
    const warnedAgain = logLines.length;
    await clock.advance(DEFAULT_TLS_RELOAD_MS);
    await waitFor('a second warning', async () => logLines.slice(warnedAgain).some((l) => l.includes('new TLS certificate not loaded')));
    assert.equal(await servedSerial(worker.url), 'B2');
    // Fixing the files is picked up again.
    await copyFile(other.cert, join(dir, 'api.crt'));
    await clock.advance(DEFAULT_TLS_RELOAD_MS);
    await waitFor('the fixed pair to be served', async () => (await servedSerial(worker.url)) === 'C3');
  });
});

describe('a worker verifies its peers', { timeout: 60_000 }, () => {
  test('a peer whose certificate the worker\'s tls.ca does not trust is not read from (its pages are read around it, the warning names the certificate)', async () => {
    const ca = await makeCa('fanout-peer');
    const other = await makeCa('fanout-peer-other');
    const dir = await mkdtemp(join(tmpdir(), 'fanout-peer-'));
    let worker: Worker | undefined;
    // The peer: a TLS server with a certificate of `ca`, which the worker does not trust. Any request
    // that reached it would be counted (none may: the handshake is refused).
    const peerPair = await ca.issue('peer-b');
    let peerRequests = 0;
    const peer = createHttpsServer({ cert: await readFile(peerPair.cert), key: await readFile(peerPair.key) }, (_req, res) => {
      peerRequests++;
      res.writeHead(503).end();
    });
    try {
      const files = Array.from({ length: 8 }, (_, i) => `peer bytes ${i}`);
      await Promise.all(files.map((text, i) => writeFile(join(dir, `f${i}.bin`), text)));
      const pair = await ca.issue('peer');
      const port = await freePort();
      const peerPort = await freePort();
      await new Promise<void>((resolve) => peer.listen(peerPort, '127.0.0.1', resolve));
      const members = [
        { id: 'a', url: `https://127.0.0.1:${port}` },
        { id: 'b', url: `https://127.0.0.1:${peerPort}` },
      ];
      // A cold page is filled through the page's owner over HTTPS: here the owner is the peer, and
      // the worker trusts only the other CA. (A worker's own pages never go over HTTP to itself.)
      const config = parseWorkerConfig({
        id: 'a',
        listen: `127.0.0.1:${port}`,
        dataDir: join(dir, 'data'),
        mounts: { data: dir },
        tls: { cert: pair.cert, key: pair.key, ca: other.ca },
        membership: { static: members },
      });
      const lines: string[] = [];
      const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(chunk.toString()), done()) });
      worker = new Worker(config, { logger: pino({ level: 'warn' }, sink) });
      await worker.start();
      const agent = new Agent({ connect: { ca: await readFile(ca.ca) } });
      try {
        const cluster = JSON.parse((await getBytes(`${worker.url}/v1/cluster`, agent)).body.toString()) as { members: Member[] };
        const ring = new HashRing(cluster.members);
        let file = -1;
        for (let i = 0; i < files.length && file < 0; i++) {
          const stat = JSON.parse((await getBytes(`${worker.url}/v1/stat/data/f${i}.bin`, agent)).body.toString()) as { version: string; size: number };
          if (ring.owners(pageKey({ mount: 'data', path: `f${i}.bin`, version: stat.version, size: stat.size, index: 0 }, config.pageSize), 1)[0]!.id === 'b') file = i;
        }
        assert.ok(file >= 0, 'a file whose page the peer owns');
        const { status, body } = await getBytes(`${worker.url}/v1/data/data/f${file}.bin`, agent);
        assert.equal(status, 200, body.toString());
        assert.equal(body.toString(), files[file]);
        assert.equal(peerRequests, 0, 'no request reached the untrusted peer');
        assert.ok(
          lines.some((l) => l.includes('page owner unavailable; reading the source instead') && /certificate/i.test(l)),
          `a warning naming the certificate: ${lines.join('').slice(0, 2000)}`,
        );
      } finally {
        await agent.close();
      }
    } finally {
      await worker?.stop();
      peer.close();
      await rm(dir, { recursive: true, force: true });
      await ca.remove();
      await other.remove();
    }
  });
});
