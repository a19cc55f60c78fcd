import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { FanoutError } from '../core/errors.js';
import type { IncomingMessage } from 'node:http';
import { nestsWithin, readBody, routePath, sendError } from './http.js';

test('a client that resets mid-body is ABORTED, not an internal failure', { timeout: 60_000 }, async () => {
  let read: Promise<Buffer> | undefined;
  const server = createServer((req) => {
    read = readBody(req, 1024 * 1024, 'admin request');
    read.catch(() => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  try {
    socket.write('POST /v1/pages HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"ite\r\n');
    while (!read) await new Promise((resolve) => setTimeout(resolve, 5));
    socket.resetAndDestroy();
    await assert.rejects(read, (err: FanoutError) => err instanceof FanoutError && err.code === 'ABORTED');
  } finally {
    socket.destroy();
    server.close();
  }
});

test('JSON nesting is measured before parsing, strings left out', () => {
  assert.equal(nestsWithin('{"keys":["a","b"],"rule":{"mount":"data"}}', 2), true);
  assert.equal(nestsWithin('{"rule":{"mount":{"x":1}}}', 2), false);
  assert.equal(nestsWithin(`{"prefix":"${'['.repeat(1000)}\\"${'{'.repeat(1000)}"}`, 1), true);
  assert.equal(nestsWithin('['.repeat(65) + ']'.repeat(65), 64), false);
  assert.equal(nestsWithin('['.repeat(64) + ']'.repeat(64), 64), true);
});

test('a refused path is named as the client wrote it, with one leading slash', () => {
  const req = { url: '/v1/data/data/../etc/passwd?x=1' } as IncomingMessage;
  assert.throws(
    () => routePath(req, '/v1/data'),
    (err: FanoutError) => err.code === 'INVALID_PATH' && err.message.includes('"/data/../etc/passwd"'),
  );
  assert.deepEqual(routePath({ url: '/v1/data/data/a%20b' } as IncomingMessage, '/v1/data').target, { mount: 'data', path: 'a b' });
});

test('an answer of a worker at a limit (OVERLOADED) says when to come back: Retry-After 1; other errors do not', async () => {
  const server = createServer((req, res) => void sendError(res, new FanoutError(req.url === '/busy' ? 'OVERLOADED' : 'NOT_FOUND', 'x')));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  try {
    const busy = await fetch(`http://127.0.0.1:${port}/busy`);
    assert.equal(busy.status, 503);
    assert.equal(busy.headers.get('retry-after'), '1');
    await busy.arrayBuffer();
    const missing = await fetch(`http://127.0.0.1:${port}/missing`);
    assert.equal(missing.headers.get('retry-after'), null);
    await missing.arrayBuffer();
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
