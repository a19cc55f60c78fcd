import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitFor } from '../harness/ports.js';
import { fanoutBin, WorkerProcess } from '../harness/workers.js';
import { sendPath } from '../../src/lib/sendfile/index.js';

const MiB = 1024 * 1024;
const PAGE = 4 * MiB;
const PAGES = 8;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A raw connection that asks for `path`, takes the first bytes and then nothing. */
function stalledGet(url: string, path: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(`GET ${path} HTTP/1.1\r\nhost: ${hostname}:${port}\r\n\r\n`));
    socket.once('error', reject);
    socket.once('data', () => {
      socket.pause();
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve(socket);
    });
  });
}

describe('worker threads (kernel sends)', { skip: sendPath() !== 'sendfile' && 'the sendfile addon is not built' }, () => {
  let dir: string;
  let worker: WorkerProcess;
  const data = randomBytes(PAGES * PAGE);
  let page: (i: number) => string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-threads-'));
    await writeFile(join(dir, 'f.bin'), data);
    worker = await WorkerProcess.start({ id: 'w-threads', mounts: { data: dir }, threads: 1 });
    const info = (await (await fetch(`${worker.url}/v1/stat/data/f.bin`)).json()) as { version: string; size: number };
    page = (i) => `/v1/page/data/f.bin?v=${encodeURIComponent(info.version)}&size=${info.size}&i=${i}`;
    const warm = Buffer.from(await (await fetch(`${worker.url}/v1/data/data/f.bin`)).arrayBuffer());
    assert.equal(sha256(warm), sha256(data));
  });
  after(async () => {
    await worker.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  test('the configured threads are shown in /v1/status and the metrics', async () => {
    const status = (await (await fetch(`${worker.url}/v1/status`)).json()) as { threads: number; sendPath: string };
    assert.equal(status.threads, 1);
    assert.equal(status.sendPath, 'sendfile');
    // The gauge shows the send threads once a send started them (the warm-up read above sent none by the kernel).
    assert.equal((await fetch(`${worker.url}${page(0)}`)).status, 200);
    const metrics = await (await fetch(`${worker.url}/metrics`)).text();
    assert.match(metrics, /^fanout_send_threads\{state="target"\} 1$/m);
  });

  test('with one send thread, concurrent hits queue for it and each gets its exact page', async () => {
    const reads = Array.from({ length: 3 * PAGES }, (_, n) => n % PAGES).map(async (i) => {
      const res = await fetch(`${worker.url}${page(i)}`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-fanout-cache'), 'hit');
      const body = Buffer.from(await res.arrayBuffer());
      assert.ok(body.equals(data.subarray(i * PAGE, (i + 1) * PAGE)), `page ${i}`);
    });
    await Promise.all(reads);
  });

  test('clients that stop reading do not hold the only send thread: other hits complete', async () => {
    const stalled = await Promise.all(Array.from({ length: 4 }, (_, i) => stalledGet(worker.url, page(i))));
    try {
      for (let i = 0; i < PAGES; i++) {
        const body = Buffer.from(await (await fetch(`${worker.url}${page(i)}`)).arrayBuffer());
        assert.ok(body.equals(data.subarray(i * PAGE, (i + 1) * PAGE)), `page ${i}`);
      }
    } finally {
      for (const socket of stalled) socket.destroy();
    }
  });
});

describe('--threads flag', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-threads-flag-'));
    await writeFile(join(dir, 'f.bin'), 'x');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  function serve(args: string[]) {
    const proc = spawn(process.execPath, [fanoutBin, 'serve', dir, '--s3-listen', 'off', '--data-dir', join(dir, '.store'), '--log-level', 'warn', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    return { proc, exited, stderr: () => stderr };
  }

  test('serve --threads 3 shows threads 3 in /v1/status', async () => {
    const port = await freePort();
    const run = serve(['--listen', `127.0.0.1:${port}`, '--threads', '3']);
    try {
      let status: { threads?: number } = {};
      await waitFor('serve to answer', async () => {
        status = (await (await fetch(`http://127.0.0.1:${port}/v1/status`)).json()) as { threads?: number };
        return true;
      });
      assert.equal(status.threads, 3);
    } finally {
      run.proc.kill('SIGTERM');
      await run.exited;
    }
  });

  test('serve --threads 0 is refused with a message naming the flag', async () => {
    const run = serve(['--listen', `127.0.0.1:${await freePort()}`, '--threads', '0']);
    assert.notEqual(await run.exited, 0);
    assert.match(run.stderr(), /--threads expects a whole number of at least 1, got "0"/);
  });
});
