import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { closeIfOrphaned, sendChunks } from './index.js';

/** A server running `handler`, and a client connection to it that reads nothing until resumed. */
async function serveToStalledClient(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ socket: Socket; stop: () => void }> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const socket = connect(port, '127.0.0.1');
  socket.pause();
  socket.on('error', () => {});
  return {
    socket,
    stop: () => {
      socket.destroy();
      server.close();
    },
  };
}

/** Chunks without end: only the reader's pace (or its being cut off) stops them. */
async function* endless(): AsyncGenerator<Buffer> {
  const chunk = Buffer.alloc(1024 * 1024, 7);
  for (;;) yield chunk;
}

test('sendChunks cuts off a reader that stops reading once it has been idle past idleMs, and reports it gone', { timeout: 60_000 }, async () => {
  let outcome: Promise<boolean> | undefined;
  const { socket, stop } = await serveToStalledClient((_req, res) => {
    outcome = sendChunks(res, endless(), () => res.writeHead(200), undefined, undefined, 300);
  });
  try {
    socket.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    while (!outcome) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(await outcome, false, 'the sender gives the reader up');
    socket.resume(); // the server closed its end: what was queued drains, then the end arrives
    await once(socket, 'close');
  } finally {
    stop();
  }
});

test('a pipelined response still queued when its connection dies is closed (node:http never closes it)', { timeout: 60_000 }, async () => {
  const responses: ServerResponse[] = [];
  const { socket, stop } = await serveToStalledClient((req, res) => {
    closeIfOrphaned(req, res);
    responses.push(res);
    // The first answer is larger than the socket takes while the client does not read, and never
    // ends: the second waits behind it, without a socket of its own.
    if (responses.length === 1) {
      res.writeHead(200);
      res.write(Buffer.alloc(16 * 1024 * 1024));
    }
  });
  try {
    socket.write('GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n');
    while (responses.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    const queued = responses[1]!;
    assert.equal(queued.socket, null, 'the second response waits for its turn');
    const closed = once(queued, 'close');
    socket.destroy();
    await closed;
  } finally {
    stop();
  }
});
