import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { sendChunks } from './index.js';

/** Chunks without end: only the reader's pace (or its being cut off) stops them. */
async function* endless(): AsyncGenerator<Buffer> {
  const chunk = Buffer.alloc(1024 * 1024, 7);
  for (;;) yield chunk;
}

test('sendChunks cuts off a reader that stops reading once it has been idle past idleMs, and reports it gone', { timeout: 60_000 }, async () => {
  let outcome: Promise<boolean> | undefined;
  const server = createServer((_req, res: ServerResponse) => {
    outcome = sendChunks(res, endless(), () => res.writeHead(200), undefined, undefined, 300);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  // A client that sends its request, then never reads a byte.
  const socket = connect(port, '127.0.0.1');
  socket.pause();
  socket.on('error', () => {});
  socket.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
  try {
    await once(socket, 'connect');
    while (!outcome) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(await outcome, false, 'the sender gives the reader up');
    socket.resume(); // the server closed its end: what was queued drains, then the end arrives
    await once(socket, 'close');
  } finally {
    socket.destroy();
    server.close();
  }
});
