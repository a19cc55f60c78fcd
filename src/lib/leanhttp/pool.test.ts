import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConnectionPool, WINDOW_PROGRESS_BYTES, type ExchangeTimeouts, type LeanResponse } from './index.js';

/** Deadlines far beyond any answer here, even on a loaded machine; the deadline test sets short ones. */
const TIMEOUTS = { connectMs: 5000, firstByteMs: 10_000, idleMs: 10_000 };
const SHORT_TIMEOUTS = { connectMs: 2000, firstByteMs: 300, idleMs: 300 };

async function text(response: LeanResponse): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of response.body) parts.push(chunk);
  return Buffer.concat(parts).toString();
}

/** A raw TCP server whose bytes are written by each test, counting connections. */
describe('the lean connection pool against a raw server', () => {
  let server: Server;
  let origin: string;
  let connections = 0;
  const sockets = new Set<Socket>();
  let answer: (socket: Socket, request: string) => void = () => {};

  before(async () => {
    server = createServer((socket) => {
      connections++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
      let pending = '';
      socket.on('data', (data) => {
        pending += data.toString('latin1');
        let end;
        while ((end = pending.indexOf('\r\n\r\n')) !== -1) {
          const request = pending.slice(0, end);
          pending = pending.slice(end + 4);
          answer(socket, request);
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  const pool = (connections = 4, timeouts: ExchangeTimeouts = TIMEOUTS) => new ConnectionPool(origin, { connections, timeouts });

  test('keep-alive: sequential requests reuse one connection, and the request head carries host and headers', async () => {
    const seen: string[] = [];
    answer = (socket, request) => {
      seen.push(request);
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    };
    const before = connections;
    const p = pool();
    for (let i = 0; i < 3; i++) assert.equal(await text(await p.get(`/v1/page/m/f?i=${i}`, { authorization: 'Bearer t' })), 'ok');
    assert.equal(connections - before, 1);
    assert.match(seen[2]!, /^GET \/v1\/page\/m\/f\?i=2 HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\nauthorization: Bearer t$/);
    p.destroy();
  });

  test('a chunked body split at every byte arrives whole with its trailers', async () => {
    const wire = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\npage\r\n0\r\nx-fanout-crc32: abc\r\n\r\n';
    answer = (socket) => {
      socket.setNoDelay(true);
      let at = 0;
      const next = () => {
        if (at < wire.length) socket.write(wire[at++]!, () => setImmediate(next));
      };
      next();
    };
    const p = pool();
    const response = await p.get('/x', {});
    assert.equal(await text(response), 'page');
    assert.deepEqual(response.trailers, { 'x-fanout-crc32': 'abc' });
    p.destroy();
  });

  test('a 4xx with a JSON body is returned as a response, and its connection is reused', async () => {
    const body = JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no such file' } });
    answer = (socket) => socket.write(`HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    const before = connections;
    const p = pool();
    const response = await p.get('/x', {});
    assert.equal(response.statusCode, 404);
    assert.equal(response.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(await text(response)), JSON.parse(body));
    assert.equal((await p.get('/y', {})).statusCode, 404);
    assert.equal(connections - before, 1);
    p.destroy();
  });

  test('a connection closed mid-body fails the body and is not reused', async () => {
    answer = (socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly some');
    const p = pool();
    const response = await p.get('/x', {});
    await assert.rejects(text(response), /middle of the response/);
    answer = (socket) => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    assert.equal(await text(await p.get('/x', {})), 'ok');
    p.destroy();
  });

  test('an oversized head and a bad content-length fail the request', async () => {
    answer = (socket) => socket.write(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`);
    const p = pool();
    await assert.rejects(p.get('/x', {}), /larger than/);
    answer = (socket) => socket.write('HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n');
    await assert.rejects(p.get('/x', {}), /bad content-length/);
    p.destroy();
  });

  test('a kept-alive connection its server closes as the request goes out is retried once on a new one', async () => {
    let n = 0;
    answer = (socket) => {
      // The first answer leaves the connection open; the second request on it finds it closed.
      if (n++ === 1) return void socket.destroy();
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    };
    const before = connections;
    const p = pool();
    assert.equal(await text(await p.get('/a', {})), 'ok');
    assert.equal(await text(await p.get('/b', {})), 'ok');
    assert.equal(connections - before, 2);
    p.destroy();
  });

  test('no more than `connections` are opened however many requests wait', async () => {
    const held: Socket[] = [];
    answer = (socket) => held.push(socket);
    const before = connections;
    const p = pool(2);
    const responses = Array.from({ length: 6 }, (_, i) => p.get(`/${i}`, {}));
    await waitFor(() => held.length === 2);
    assert.equal(connections - before, 2);
    answer = (socket) => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx');
    for (const socket of held) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx');
    for (const response of responses) assert.equal(await text(await response), 'x');
    assert.equal(connections - before, 2);
    p.destroy();
  });

  test('deadlines: no head within firstByteMs, a stalled body within idleMs', async () => {
    answer = () => {};
    const p = pool(4, SHORT_TIMEOUTS);
    await assert.rejects(p.get('/x', {}), (e: { code?: string }) => e.code === 'FANOUT_FIRST_BYTE_TIMEOUT');
    answer = (socket) => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc');
    const response = await p.get('/x', {});
    await assert.rejects(text(response), (e: { code?: string }) => e.code === 'FANOUT_IDLE_TIMEOUT');
    p.destroy();
  });

  test('a wall clock stepped back an hour while a head is awaited: the request still fails after firstByteMs', { timeout: 20_000 }, async () => {
    const wallNow = Date.now;
    // The step (an NTP step, a resumed VM) comes once the request is out and its deadline set.
    // Before: the timer fired after firstByteMs, read the deadline by Date.now() as an hour away,
    // and waited it out: the request hung for an hour.
    answer = () => void (Date.now = () => wallNow() - 3_600_000);
    const p = pool(4, SHORT_TIMEOUTS);
    try {
      await assert.rejects(p.get('/x', {}), (e: { code?: string }) => e.code === 'FANOUT_FIRST_BYTE_TIMEOUT');
    } finally {
      Date.now = wallNow;
      p.destroy();
    }
  });

  test('a body that trickles is given up once a window brings less than the floor, however often its bytes come', async () => {
    let timer: NodeJS.Timeout | undefined;
    answer = (socket) => {
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 200\r\n\r\n');
      // One byte every 20 ms: each one would restart a deadline between chunks, so the body
      // would end after 4 s (and the test fail) without the window's floor.
      timer = setInterval(() => socket.writable && socket.write('x'), 20);
    };
    const p = pool(4, SHORT_TIMEOUTS);
    try {
      const response = await p.get('/x', {});
      await assert.rejects(text(response), (e: { code?: string; message: string }) => e.code === 'FANOUT_IDLE_TIMEOUT' && /crawled: \d+ bytes in 300 ms/.test(e.message));
    } finally {
      clearInterval(timer);
      p.destroy();
    }
  });

  test('a body moving above the floor is not cut, nor one its reader holds for windows on end', async () => {
    const piece = Buffer.alloc(WINDOW_PROGRESS_BYTES, 'y');
    const pieces = 12;
    let timer: NodeJS.Timeout | undefined;
    answer = (socket) => {
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${pieces * piece.length}\r\n\r\n`);
      let sent = 0;
      // A floor's worth every 100 ms of a 300 ms window: 1.2 s in all, four windows.
      timer = setInterval(() => {
        if (sent++ < pieces && socket.writable) socket.write(piece);
        else clearInterval(timer);
      }, 100);
    };
    const p = pool(4, SHORT_TIMEOUTS);
    try {
      assert.equal((await text(await p.get('/x', {}))).length, pieces * piece.length);
      // 4 MiB sent at once; the reader takes nothing for four windows, then all of it.
      const big = 4 * 1024 * 1024;
      answer = (socket) => socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${big}\r\n\r\n${'z'.repeat(big)}`);
      const response = await p.get('/x', {});
      await new Promise((resolve) => setTimeout(resolve, 4 * SHORT_TIMEOUTS.idleMs));
      assert.equal((await text(response)).length, big);
    } finally {
      clearInterval(timer);
      p.destroy();
    }
  });

  test('1xx heads keep an answer coming only up to maxInterimMs: a peer that sends nothing else is given up', async () => {
    let timer: NodeJS.Timeout | undefined;
    answer = (socket) => {
      socket.write('HTTP/1.1 102 Processing\r\n\r\n');
      timer = setInterval(() => socket.writable && socket.write('HTTP/1.1 102 Processing\r\n\r\n'), 50);
    };
    const p = pool(4, { ...SHORT_TIMEOUTS, maxInterimMs: 600 });
    try {
      const started = Date.now();
      await assert.rejects(p.get('/x', {}), (e: { code?: string; message: string }) => e.code === 'FANOUT_INTERIM_TIMEOUT' && /only interim answers/.test(e.message));
      // Before: the deadline was only no longer refreshed past the cap, so it ended up to firstByteMs later.
      assert.ok(Date.now() - started < 600 + 250, `given up at the cap (${Date.now() - started} ms)`);
    } finally {
      clearInterval(timer);
      p.destroy();
    }
  });

  test('1xx heads that stop are a first-byte timeout firstByteMs after the last one, within the cap', async () => {
    answer = (socket) => {
      socket.write('HTTP/1.1 102 Processing\r\n\r\n');
    };
    const p = pool(4, { ...SHORT_TIMEOUTS, maxInterimMs: 5000 });
    try {
      await assert.rejects(p.get('/x', {}), (e: { code?: string; message: string }) => e.code === 'FANOUT_FIRST_BYTE_TIMEOUT' && /1 interim answers only/.test(e.message));
    } finally {
      p.destroy();
    }
  });

  test('header fields named like Object properties are fields like any other', async () => {
    answer = (socket) => socket.write('HTTP/1.1 200 OK\r\nconstructor: y\r\n__proto__: z\r\ncontent-length: 2\r\n\r\nok');
    const p = pool();
    const response = await p.get('/x', {});
    assert.equal(response.headers['constructor'], 'y');
    assert.equal(response.headers['__proto__'], 'z');
    assert.equal(await text(response), 'ok');
    p.destroy();
  });

  test('an abort ends the request with its reason, before the head and in the body, and closes the connection', async () => {
    answer = () => {};
    const p = pool();
    const early = new AbortController();
    const waiting = p.get('/x', {}, early.signal);
    setTimeout(() => early.abort(new Error('hedge won')), 20);
    await assert.rejects(waiting, /hedge won/);
    let served: Socket | undefined;
    answer = (socket) => {
      served = socket;
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc');
    };
    const late = new AbortController();
    const response = await p.get('/x', {}, late.signal);
    late.abort();
    await assert.rejects(text(response), (e: Error) => e.name === 'AbortError');
    await waitFor(() => served!.destroyed || served!.readableEnded);
    p.destroy();
  });

  test('bytes sent on an idle connection close it; the next request opens a new one', async () => {
    let first: Socket | undefined;
    answer = (socket) => {
      first ??= socket;
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    };
    const before = connections;
    const p = pool();
    assert.equal(await text(await p.get('/a', {})), 'ok');
    first!.write('HTTP/1.1 200 OK\r\n');
    await waitFor(() => p.size === 0);
    assert.equal(await text(await p.get('/b', {})), 'ok');
    assert.equal(connections - before, 2);
    p.destroy();
  });
});

describe('read memory of the lean client', () => {
  let server: HttpServer;
  let origin: string;
  const PAGE = 700 * 1024;

  before(async () => {
    // Each answer's bytes are its index, so a chunk overwritten by a later read would show.
    server = createHttpServer((req, res) => res.end(Buffer.alloc(PAGE, Number(req.url!.slice(1)))));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const body = async (p: ConnectionPool, i: number) => {
    const chunks: Buffer[] = [];
    for await (const chunk of (await p.get(`/${i}`, {})).body) chunks.push(chunk);
    return chunks;
  };

  test('chunks not released keep their bytes while later responses are read', async () => {
    const p = new ConnectionPool(origin, { connections: 1, timeouts: TIMEOUTS });
    const kept = [];
    for (let i = 1; i <= 6; i++) kept.push(await body(p, i));
    kept.forEach((chunks, i) => assert.ok(Buffer.concat(chunks).every((b) => b === i + 1), `response ${i + 1} intact`));
    p.destroy();
  });

  test('released chunks are read into again, and a second release of a chunk changes nothing', async () => {
    const p = new ConnectionPool(origin, { connections: 1, timeouts: TIMEOUTS });
    const first = await body(p, 1);
    const memory = new Set(first.map((c) => c.buffer));
    for (const chunk of first) {
      p.slabs.release(chunk);
      p.slabs.release(chunk);
    }
    let reused = false;
    const kept: Buffer[][] = [];
    for (let i = 2; i <= 5; i++) {
      const chunks = await body(p, i);
      reused ||= chunks.some((c) => memory.has(c.buffer));
      assert.ok(Buffer.concat(chunks).every((b) => b === i));
      kept.push(chunks);
    }
    assert.ok(reused, 'a released slab was read into again');
    kept.forEach((chunks, i) => assert.ok(Buffer.concat(chunks).every((b) => b === i + 2), `unreleased response ${i + 2} intact`));
    p.destroy();
  });
});

describe('the lean connection pool against node:http', () => {
  let server: HttpServer;
  let origin: string;

  before(async () => {
    server = createHttpServer((req, res) => {
      if (req.url === '/trailers') {
        res.writeHead(200, { trailer: 'x-fanout-crc32' });
        res.write(Buffer.alloc(3 * 1024 * 1024, 1));
        res.addTrailers({ 'x-fanout-crc32': 'cafe' });
        res.end();
      } else {
        res.end(Buffer.alloc(5 * 1024 * 1024 + 17, 2));
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  test('large bodies, chunked with trailers and with a length, arrive whole through a slow reader', async () => {
    const p = new ConnectionPool(origin, { connections: 1, timeouts: TIMEOUTS });
    const chunked = await p.get('/trailers', {});
    let size = 0;
    for await (const chunk of chunked.body) {
      size += chunk.length;
      if (size < 1024 * 1024) await new Promise((r) => setTimeout(r, 5)); // backpressure on the socket
    }
    assert.equal(size, 3 * 1024 * 1024);
    assert.deepEqual(chunked.trailers, { 'x-fanout-crc32': 'cafe' });
    const whole = await p.get('/length', {});
    const parts: Buffer[] = [];
    for await (const chunk of whole.body) parts.push(chunk);
    const body = Buffer.concat(parts);
    assert.equal(body.length, 5 * 1024 * 1024 + 17);
    assert.ok(body.every((b) => b === 2));
    assert.equal(p.size, 1);
    p.destroy();
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('an http:// pool never reads its TLS options (a deferred trust builds its context when read: ≈ 40 ms of a short command)', () => {
  const tls = {
    get secureContext(): never {
      throw new Error('read');
    },
  };
  const pool = new ConnectionPool('http://127.0.0.1:9', { connections: 1, timeouts: TIMEOUTS, tls });
  pool.destroy();
  assert.throws(() => new ConnectionPool('https://127.0.0.1:9', { connections: 1, timeouts: TIMEOUTS, tls }), /read/, 'an https pool reads them');
});
