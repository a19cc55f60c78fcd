import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { ConnectionPool, type LeanResponse } from './index.js';

const TIMEOUTS = { connectMs: 2000, firstByteMs: 5000, idleMs: 5000 };

/** A raw server that holds every request until the test answers it. */
let server: Server;
let origin: string;
const held: Socket[] = [];
const sockets = new Set<Socket>();

before(async () => {
  server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.on('data', () => held.push(socket));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => server.close(r));
});

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(condition(), what);
}

async function text(response: LeanResponse): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of response.body) parts.push(chunk);
  return Buffer.concat(parts).toString();
}

test('raising the connection limit gives a request waiting for a connection a new one at once', async () => {
  const pool = new ConnectionPool(origin, { connections: 1, timeouts: TIMEOUTS });
  const first = pool.get('/a', {});
  const second = pool.get('/b', {});
  await until(() => held.length === 1, 'the first request reached the server');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(held.length, 1, 'with one connection the second request waits');
  pool.raise(2);
  await until(() => held.length === 2, 'the waiting request went out on a second connection');
  assert.equal(pool.size, 2);
  for (const socket of held) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  assert.deepEqual([await text(await first), await text(await second)], ['ok', 'ok']);
  pool.raise(1); // never lowers: the pool keeps its two slots
  pool.destroy();
});
