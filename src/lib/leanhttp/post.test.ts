import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ConnectionPool, MAX_POST_BODY, type LeanResponse } from './index.js';

/** Deadlines far beyond any answer here, even on a loaded machine; the deadline test sets short ones. */
const TIMEOUTS = { connectMs: 5000, firstByteMs: 10_000, idleMs: 10_000 };
const SHORT_TIMEOUTS = { connectMs: 2000, firstByteMs: 300, idleMs: 300 };

async function bytes(response: LeanResponse): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of response.body) parts.push(chunk);
  return Buffer.concat(parts);
}

/** POST on the lean pool against Node's own HTTP server (the worker's). */
describe('the lean connection pool: POST with a small body', () => {
  let server: Server;
  let origin: string;
  const sockets = new Set<Socket>();
  let connections = 0;
  let handle: (req: IncomingMessage, body: Buffer, res: ServerResponse) => void = () => {};

  before(async () => {
    server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => handle(req, Buffer.concat(parts), res));
    });
    server.on('connection', (socket: Socket) => {
      connections++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  const pool = (timeouts = TIMEOUTS) => new ConnectionPool(origin, { connections: 2, timeouts });

  test('the server receives the body intact with its length and headers, and the answer is read whole', async () => {
    let got: { method?: string; length?: string; type?: string; body?: Buffer } = {};
    handle = (req, body, res) => {
      got = { method: req.method, length: req.headers['content-length'], type: req.headers['content-type'], body };
      const answer = Buffer.alloc(3 * 1024 * 1024 + 5, 7);
      res.writeHead(200, { 'content-length': answer.length });
      res.end(answer);
    };
    const body = Buffer.from(JSON.stringify({ items: Array.from({ length: 500 }, (_, i) => ({ path: `dir/file-${i}`, index: 0 })) }));
    const p = pool();
    const response = await p.post('/v1/pages', { 'content-type': 'application/json' }, body);
    assert.equal(response.statusCode, 200);
    const answer = await bytes(response);
    assert.equal(answer.length, 3 * 1024 * 1024 + 5);
    assert.ok(answer.every((b) => b === 7));
    assert.equal(got.method, 'POST');
    assert.equal(got.length, String(body.length));
    assert.equal(got.type, 'application/json');
    assert.ok(got.body!.equals(body));
    p.destroy();
  });

  test('keep-alive: GETs and POSTs after a POST reuse its connection', async () => {
    const seen: string[] = [];
    handle = (req, body, res) => {
      seen.push(`${req.method} ${body.toString()}`);
      res.end('ok');
    };
    const before = connections;
    const p = pool();
    assert.equal((await bytes(await p.post('/a', {}, Buffer.from('one')))).toString(), 'ok');
    assert.equal((await bytes(await p.get('/b', {}))).toString(), 'ok');
    assert.equal((await bytes(await p.post('/c', {}, Buffer.from('two')))).toString(), 'ok');
    assert.deepEqual(seen, ['POST one', 'GET ', 'POST two']);
    assert.equal(connections - before, 1);
    assert.equal(p.size, 1);
    p.destroy();
  });

  test('a server that closes mid-answer fails the body, and the next POST gets a new connection', async () => {
    handle = (_req, _body, res) => {
      res.writeHead(200, { 'content-length': 1000 });
      res.write('only some', () => res.socket?.destroy());
    };
    const p = pool();
    const response = await p.post('/v1/pages', {}, Buffer.from('{}'));
    await assert.rejects(bytes(response));
    handle = (_req, body, res) => res.end(body);
    const before = connections;
    assert.equal((await bytes(await p.post('/v1/pages', {}, Buffer.from('again')))).toString(), 'again');
    assert.equal(connections - before, 1);
    p.destroy();
  });

  test('deadlines: no head within firstByteMs, a stalled answer within idleMs', async () => {
    handle = () => {}; // never answers
    const p = pool(SHORT_TIMEOUTS);
    await assert.rejects(p.post('/v1/pages', {}, Buffer.from('{}')), { code: 'FANOUT_FIRST_BYTE_TIMEOUT' });
    handle = (_req, _body, res) => {
      res.writeHead(200, { 'content-length': 100 });
      res.write('some');
    };
    const response = await p.post('/v1/pages', {}, Buffer.from('{}'));
    await assert.rejects(bytes(response), { code: 'FANOUT_IDLE_TIMEOUT' });
    p.destroy();
  });

  test('an abort ends the POST with its reason; a body over the bound is refused before anything is sent', async () => {
    handle = () => {};
    const p = pool();
    const stop = new AbortController();
    const pending = p.post('/v1/pages', {}, Buffer.from('{}'), stop.signal);
    stop.abort(new Error('caller left'));
    await assert.rejects(pending, /caller left/);
    const before = connections;
    await assert.rejects(p.post('/v1/pages', {}, Buffer.alloc(MAX_POST_BODY + 1)), /request body/);
    assert.equal(connections, before);
    p.destroy();
  });
});
