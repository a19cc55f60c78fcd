import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import pino from 'pino';
import { RequestGuard, loggedUrl } from './requestguard.js';

/** Two requests written one after the other on one connection; what came back before it closed. */
async function twoRequestsOnOneConnection(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let text = '';
    let second = false;
    const timer = setTimeout(() => socket.destroy(), 10_000);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      // The first answer is in: send the second on the same connection, as a keep-alive client does.
      if (!second && text.includes('first-done')) {
        second = true;
        socket.write('GET /second HTTP/1.1\r\nhost: x\r\n\r\n');
      }
      if (text.includes('second-done')) socket.end();
    });
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.write('GET /first HTTP/1.1\r\nhost: x\r\n\r\n');
  });
}

test('a request whose code fails after its whole answer is written leaves the kept-alive connection serving', async () => {
  const errors: string[] = [];
  const guard = new RequestGuard({
    logger: pino({ level: 'silent' }),
    metrics: { requestErrors: { labels: (code: string) => ({ inc: () => errors.push(code) }) } } as never,
    connections: { isExcess: () => false },
    maxConnections: 10,
    async dispatch(req: IncomingMessage, res: ServerResponse) {
      res.writeHead(200, { 'content-length': req.url === '/first' ? 10 : 11 });
      res.end(req.url === '/first' ? 'first-done' : 'second-done');
      // Bookkeeping after the answer (metrics, a store write) that fails.
      if (req.url === '/first') throw new Error('after the answer');
    },
  });
  const server = createServer((req, res) => guard.handle(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const text = await twoRequestsOnOneConnection((server.address() as AddressInfo).port);
    assert.match(text, /first-done/);
    assert.match(text, /second-done/, `the connection was cut after the first answer: ${JSON.stringify(text)}`);
    assert.deepEqual(errors, ['INTERNAL'], 'the failure is still counted');
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test('a token in a request URL never reaches the log', () => {
  assert.equal(loggedUrl('/ui?token=admintoken-0123456789'), '/ui?token=[redacted]');
  assert.equal(loggedUrl('/ui?x=1&TOKEN=abc&y=2'), '/ui?x=1&TOKEN=[redacted]&y=2');
  assert.equal(loggedUrl('/v1/data/data/a.bin?v=1'), '/v1/data/data/a.bin?v=1');
  assert.equal(loggedUrl(undefined), undefined);
});
