import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitFor } from '../harness/ports.js';
import { StalledReaders } from '../harness/slowclients.js';
import { WorkerProcess } from '../harness/workers.js';
import { sendPath } from '../../src/lib/sendfile/index.js';

const MiB = 1024 * 1024;
const run = promisify(execFile);
const PAGES = 24; // more than loopback socket buffers hold, so a client that stops reading stalls the send
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Three workers that know each other, each with an anonymous S3 gateway; FANOUT_NO_SENDFILE as asked (the child takes the env at spawn). */
async function startCluster(js: boolean, dir: string): Promise<{ workers: WorkerProcess[]; gateways: string[] }> {
  const api = await Promise.all([0, 1, 2].map(() => freePort()));
  const s3 = await Promise.all([0, 1, 2].map(() => freePort()));
  const members = api.map((port, i) => ({ id: `w${i + 1}`, url: `http://127.0.0.1:${port}` }));
  const saved = process.env.FANOUT_NO_SENDFILE;
  if (js) process.env.FANOUT_NO_SENDFILE = '1';
  else delete process.env.FANOUT_NO_SENDFILE;
  try {
    // One after another: on a loaded machine three starting at once can miss the harness's start deadline.
    const workers: WorkerProcess[] = [];
    for (const [i, port] of api.entries()) {
      const config = { id: members[i]!.id, mounts: { data: dir }, pageSize: '1MiB', membership: { static: members }, gateway: { listen: `127.0.0.1:${s3[i]}`, anonymous: true }, limits: { clientIdle: '2s' } };
      workers.push(await WorkerProcess.start(config, port));
    }
    return { workers, gateways: s3.map((port) => `http://127.0.0.1:${port}`) };
  } finally {
    if (saved === undefined) delete process.env.FANOUT_NO_SENDFILE;
    else process.env.FANOUT_NO_SENDFILE = saved;
  }
}

function get(url: string, headers: Record<string, string> = {}, agent: Agent | false = false): Promise<{ res: IncomingMessage; body: Buffer; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ res, body: Buffer.concat(chunks), socket: res.socket as Socket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** A GET whose client takes the first bytes and then reads nothing more. */
function stalledGet(base: string, path: string): Promise<Socket> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port) }, () => socket.write(`GET ${path} HTTP/1.1\r\nhost: ${url.host}\r\n\r\n`));
    socket.once('error', reject);
    socket.once('data', () => {
      socket.pause();
      socket.on('error', () => {});
      resolve(socket);
    });
  });
}

/** Whether the server's end of the connection from local port `clientPort` is still ESTABLISHED (ss, from the kernel). */
async function established(base: string, clientPort: number): Promise<boolean> {
  const url = new URL(base);
  const { stdout } = await run('ss', ['-tnH', 'state', 'established', 'src', `${url.hostname}:${url.port}`, 'dst', `127.0.0.1:${clientPort}`]);
  return stdout.trim() !== '';
}

/** Reads what a stalled connection still has, to its end; the bytes (headers included). */
function drain(socket: Socket): Promise<number> {
  return new Promise((resolve) => {
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
    socket.once('close', () => resolve(bytes));
    socket.resume();
  });
}

/** Ranges that start, end and cross page boundaries, one byte, suffixes, open ends. */
function ranges(size: number): { header?: string; start: number; end: number }[] {
  return [
    { start: 0, end: size },
    { header: `bytes=${MiB - 10}-${MiB + 9}`, start: MiB - 10, end: MiB + 10 },
    { header: `bytes=100-${5 * MiB + 6}`, start: 100, end: 5 * MiB + 7 },
    { header: `bytes=${3 * MiB}-${3 * MiB}`, start: 3 * MiB, end: 3 * MiB + 1 },
    { header: `bytes=${2 * MiB}-${9 * MiB - 1}`, start: 2 * MiB, end: 9 * MiB },
    { header: 'bytes=-1000', start: size - 1000, end: size },
    { header: `bytes=${7 * MiB + 12345}-`, start: 7 * MiB + 12345, end: size },
  ];
}

const paths = sendPath() === 'sendfile' ? (['sendfile', 'js'] as const) : (['js'] as const);

for (const path of paths) {
  describe(`/v1/data and S3 GetObject ranges by the ${path} path, local and remote pages mixed`, () => {
    let dir: string;
    let workers: WorkerProcess[];
    let gateways: string[];
    const data = randomBytes(PAGES * MiB - 4321);

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'fanout-kernel-ranges-'));
      await writeFile(join(dir, 'big.bin'), data);
      ({ workers, gateways } = await startCluster(path === 'js', dir));
      // Cold read once: every page lands on its owner.
      const { body } = await get(`${workers[0]!.url}/v1/data/data/big.bin`);
      assert.equal(sha256(body), sha256(data));
    });
    after(async () => {
      await Promise.all((workers ?? []).map((w) => w.destroy()));
      await rm(dir, { recursive: true, force: true });
    });

    test('the workers send by the path under test, and each holds some pages but not all', async () => {
      const statuses = () => Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/status`)).json()) as { sendPath: string; pages: number }));
      // An owner stores a page it filled after the last byte went out (to the relaying worker, and
      // on to this test): the cold read can end before the last pages are in their stores.
      await waitFor('every worker to hold some pages', async () => (await statuses()).every((s) => s.pages > 0)).catch(() => {});
      for (const [i, status] of (await statuses()).entries()) {
        assert.equal(status.sendPath, path);
        assert.ok(status.pages > 0 && status.pages < PAGES, `${workers[i]!.id} holds ${status.pages} of ${PAGES} pages`);
      }
    });

    test('/v1/data returns the exact bytes of every range from every worker', async () => {
      for (const worker of workers) {
        for (const range of ranges(data.length)) {
          const { res, body } = await get(`${worker.url}/v1/data/data/big.bin`, range.header ? { range: range.header } : {});
          const what = `${worker.id} ${range.header ?? 'whole file'}`;
          assert.equal(res.statusCode, range.header ? 206 : 200, what);
          assert.equal(Number(res.headers['content-length']), range.end - range.start, what);
          assert.equal(body.length, range.end - range.start, what);
          assert.ok(body.equals(data.subarray(range.start, range.end)), `${what}: wrong bytes`);
        }
      }
    });

    test('S3 GetObject returns the exact bytes of every range from every worker', async () => {
      for (const gateway of gateways) {
        for (const range of ranges(data.length)) {
          const { res, body } = await get(`${gateway}/data/big.bin`, range.header ? { range: range.header } : {});
          const what = `${gateway} ${range.header ?? 'whole object'}`;
          assert.equal(res.statusCode, range.header ? 206 : 200, what);
          if (range.header) assert.equal(res.headers['content-range'], `bytes ${range.start}-${range.end - 1}/${data.length}`, what);
          assert.equal(body.length, range.end - range.start, what);
          assert.ok(body.equals(data.subarray(range.start, range.end)), `${what}: wrong bytes`);
        }
      }
    });

    test('30 range reads in a row on one keep-alive connection all arrive whole, on /v1/data and S3', async () => {
      for (const base of [`${workers[1]!.url}/v1/data/data/big.bin`, `${gateways[2]}/data/big.bin`]) {
        const agent = new Agent({ keepAlive: true, maxSockets: 1 });
        const sockets = new Set<Socket>();
        try {
          for (let n = 0; n < 30; n++) {
            const start = (n * 524_287) % (data.length - 3 * MiB);
            const end = start + MiB + n * 1000;
            const { res, body, socket } = await get(base, { range: `bytes=${start}-${end - 1}` }, agent);
            assert.equal(res.statusCode, 206);
            assert.ok(body.equals(data.subarray(start, end)), `${base} request ${n}: wrong bytes`);
            sockets.add(socket);
          }
          assert.equal(sockets.size, 1, 'every request went on the same connection');
        } finally {
          agent.destroy();
        }
      }
    });

    test('clients that stop reading a range are cut after clientIdle (on /v1/data, and on S3 GetObject by the kernel path), and the worker keeps serving ranges', async () => {
      const worker = workers[2]!;
      const errors = async () => (await worker.metrics()).fanout_request_errors_total ?? 0;
      const before = await errors();
      const readers = await StalledReaders.open(worker.url, ['/v1/data/data/big.bin', '/v1/data/data/big.bin']);
      const s3 = await stalledGet(gateways[2]!, '/data/big.bin');
      try {
        // The clients read nothing, so they cannot see the cut yet: the worker counts it, and the
        // kernel shows the gateway's end of the connection leaving ESTABLISHED.
        await waitFor('the worker to cut the stalled /v1/data readers', async () => (await errors()) >= before + 2);
        if (path === 'sendfile') {
          await waitFor('the gateway to close the stalled S3 connection', async () => !(await established(gateways[2]!, s3.localPort!)));
          const received = await drain(s3);
          assert.ok(received < data.length, `the stalled S3 reader got ${received} of ${data.length} bytes: cut, not served whole`);
        }
        // (The gateway's JS path holds only a 64 KiB slice for a stalled reader, and has no idle cut of its own.)
        for (const bytes of await readers.drain()) assert.ok(bytes < data.length, `a stalled reader got ${bytes} of ${data.length} bytes: cut, not served whole`);
      } finally {
        readers.close();
        s3.destroy();
      }
      const { body } = await get(`${worker.url}/v1/data/data/big.bin`, { range: `bytes=${MiB}-${4 * MiB - 1}` });
      assert.ok(body.equals(data.subarray(MiB, 4 * MiB)));
      const whole = await get(`${gateways[2]}/data/big.bin`);
      assert.ok(whole.body.equals(data));
    });
  });
}
