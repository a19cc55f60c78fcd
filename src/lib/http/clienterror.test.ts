import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { closeIfOrphaned } from './clienterror.js';

test('a pipelined response still queued when its connection dies is closed (node:http never closes it)', { timeout: 60_000 }, async () => {
  const responses: ServerResponse[] = [];
  const server = createServer((req, res) => {
    closeIfOrphaned(req, res);
    responses.push(res);
    // The first answer is larger than the socket takes while the client does not read, and never
    // ends: the second waits behind it, without a socket of its own.
    if (responses.length === 1) {
      res.writeHead(200);
      res.write(Buffer.alloc(16 * 1024 * 1024));
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const socket = connect(port, '127.0.0.1');
  socket.pause();
  socket.on('error', () => {});
  try {
    socket.write('GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n');
    while (responses.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    const queued = responses[1]!;
    assert.equal(queued.socket, null, 'the second response waits for its turn');
    const closed = once(queued, 'close');
    socket.destroy();
    await closed;
  } finally {
    socket.destroy();
    server.close();
  }
});
