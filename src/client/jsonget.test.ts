import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { JsonGetter } from './jsonget.js';

/** Short deadlines for the tests that wait for one to pass; long ones where an answer is expected (a loaded CI machine). */
const shortTimeouts = { connectMs: 2000, firstByteMs: 300, idleMs: 300 };
const timeouts = { connectMs: 30_000, firstByteMs: 30_000, idleMs: 30_000 };

/** A raw TCP server scripted per connection, so that heads, bodies and closes are exactly what a test needs. */
async function rawServer(onConnection: (socket: Socket, index: number) => void): Promise<{ url: string; server: Server; sockets: Socket[] }> {
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    onConnection(socket, sockets.length - 1);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, server, sockets };
}

const close = async (s: { server: Server; sockets: Socket[] }) => {
  for (const socket of s.sockets) socket.destroy();
  await new Promise((r) => s.server.close(r));
};

const answer = (body: string, extra = '') => `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

test('a JSON answer comes back with its status and text, over one kept-alive connection', async () => {
  const s = await rawServer((socket) => socket.on('data', () => socket.write(answer('{"ok":true}', 'keep-alive: timeout=5\r\n'))));
  const getter = new JsonGetter(timeouts, undefined);
  try {
    assert.deepEqual(await getter.get(`${s.url}/v1/cluster`, {}), { statusCode: 200, text: '{"ok":true}' });
    assert.deepEqual(await getter.get(`${s.url}/v1/cluster`, {}), { statusCode: 200, text: '{"ok":true}' });
    assert.equal(s.sockets.length, 1, 'the second request reused the connection');
  } finally {
    getter.close();
    await close(s);
  }
});

test('a worker that accepts but never answers fails with the first-byte deadline', async () => {
  const s = await rawServer(() => {});
  const getter = new JsonGetter(shortTimeouts, undefined);
  try {
    await assert.rejects(getter.get(`${s.url}/v1/stat/data/x`, {}), { code: 'FANOUT_FIRST_BYTE_TIMEOUT' });
  } finally {
    getter.close();
    await close(s);
  }
});

test('a body that stalls after its head fails with the idle deadline', async () => {
  const s = await rawServer((socket) => socket.on('data', () => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial":')));
  const getter = new JsonGetter(shortTimeouts, undefined);
  try {
    await assert.rejects(getter.get(`${s.url}/v1/list/data/`, {}), { code: 'FANOUT_IDLE_TIMEOUT' });
  } finally {
    getter.close();
    await close(s);
  }
});

test('a body cut short by a closed connection is an error, not a truncated answer', async () => {
  const s = await rawServer((socket) => socket.on('data', () => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial":')));
  const getter = new JsonGetter(timeouts, undefined);
  try {
    await assert.rejects(getter.get(`${s.url}/v1/list/data/`, {}));
  } finally {
    getter.close();
    await close(s);
  }
});

test('a kept-alive connection the worker closed meanwhile is retried once on a new connection', async () => {
  // The first connection answers once, then is reset as the next request arrives on it.
  const s = await rawServer((socket, index) => {
    let requests = 0;
    socket.on('data', () => {
      requests++;
      if (index === 0 && requests === 2) socket.resetAndDestroy();
      else socket.write(answer(`{"connection":${index}}`));
    });
  });
  const getter = new JsonGetter(timeouts, undefined);
  try {
    assert.equal((await getter.get(`${s.url}/v1/cluster`, {})).text, '{"connection":0}');
    assert.equal((await getter.get(`${s.url}/v1/cluster`, {})).text, '{"connection":1}');
  } finally {
    getter.close();
    await close(s);
  }
});

test('a refused connection is reported with the system error', async () => {
  const s = await rawServer(() => {});
  const { url } = s;
  await close(s);
  const getter = new JsonGetter(timeouts, undefined);
  try {
    await assert.rejects(getter.get(`${url}/v1/cluster`, {}), { code: 'ECONNREFUSED' });
  } finally {
    getter.close();
  }
});
