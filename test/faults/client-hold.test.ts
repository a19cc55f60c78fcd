import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** A raw connection that keeps its side open when the worker closes its own (allowHalfOpen), as a hostile client may. */
function holdingClient(url: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ port: Number(port), host: hostname, allowHalfOpen: true }, () => resolve(socket));
    socket.on('error', reject);
  });
}

/** Resolves once the worker has ended the connection (its FIN, or a reset); rejects if it has not within `deadlineMs`. */
function endedByWorker(socket: Socket, deadlineMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.readableEnded || socket.destroyed) return resolve();
    const timer = setTimeout(() => reject(new Error(`the worker kept the connection open for ${deadlineMs} ms`)), deadlineMs);
    const ended = () => {
      clearTimeout(timer);
      resolve();
    };
    socket.once('end', ended);
    socket.once('close', ended);
    socket.on('error', ended);
  });
}

/**
 * What one client holds of a worker must not keep others out: found by a fault hunt against a
 * real worker (capped at 4 connections here, to reach the cap with a few sockets).
 */
describe('clients that hold on to a worker', () => {
  let source: string;
  let worker: WorkerProcess;
  const big = randomBytes(32 * MiB);

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-client-hold-'));
    await writeFile(join(source, 'big.bin'), big);
    worker = await WorkerProcess.start({ id: 'hold', mounts: { data: source }, pageSize: '1MiB', limits: { maxConnections: 4 } });
  });

  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
  });

  test('connections answered 408 for a head that never ends are closed both ways, even if the client keeps its side open', async () => {
    // Its own worker: a short clientIdle, so that node:http's request deadline fires soon.
    const strict = await WorkerProcess.start({ id: 'hold-408', mounts: { data: source }, pageSize: '1MiB', limits: { maxConnections: 4, clientIdle: '1s' } });
    const clients = await Promise.all(Array.from({ length: 4 }, () => holdingClient(strict.url)));
    try {
      await Promise.all(
        clients.map(async (socket) => {
          const answer: Buffer[] = [];
          socket.on('data', (chunk: Buffer) => answer.push(chunk));
          socket.write('GET /healthz HTTP/1.1\r\nhost: localhost\r\n');
          await endedByWorker(socket, 90_000);
          assert.match(Buffer.concat(answer).toString('latin1'), /^HTTP\/1\.1 408 /);
        }),
      );
      // Before, the 408 only half-closed them: each stayed counted under the cap, and every new client got 503.
      await waitFor('a new client to be served while the four keep their side open', async () => (await fetch(`${strict.url}/healthz`)).status === 200, 10_000);
    } finally {
      for (const socket of clients) socket.destroy();
      await strict.destroy();
    }
  });

  test('a connection that pipelines many reads and reads no answer is closed, and other clients are served meanwhile', async () => {
    const attacker = await holdingClient(worker.url);
    try {
      const requests = Array.from({ length: 40 }, (_, i) => `GET /v1/data/data/big.bin HTTP/1.1\r\nhost: localhost\r\nrange: bytes=${(i % 8) * 4 * MiB}-${(i % 8) * 4 * MiB + 4 * MiB - 1}\r\n\r\n`);
      attacker.write(requests.join(''));
      // Before, the worker took all 40 in and each held a response slot until the client's idle deadline (60 s).
      await endedByWorker(attacker);
      const response = await fetch(`${worker.url}/v1/data/data/big.bin`, { headers: { range: `bytes=${MiB}-${3 * MiB - 1}` } });
      assert.equal(response.status, 206);
      assert.ok(Buffer.from(await response.arrayBuffer()).equals(big.subarray(MiB, 3 * MiB)));
    } finally {
      attacker.destroy();
    }
  });
});
