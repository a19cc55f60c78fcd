import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { ADMIN_TOKEN, MiB, startFixture, type Fixture } from './fuzz/fixture.js';
import { Sender } from './fuzz/send.js';

/**
 * Regressions for what the API fuzzer (fuzz.test.ts) found, each as the smallest request that
 * showed it, against a real worker process.
 */

/** Writes raw bytes on a fresh connection and returns everything the server sends until it closes. */
function rawExchange(url: string, bytes: string, deadlineMs = 10_000): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${deadlineMs} ms; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`));
    }, deadlineMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.write(bytes, 'latin1');
  });
}

const ADMIN: [string, string] = ['authorization', `Bearer ${ADMIN_TOKEN}`];

describe('HTTP edge cases the fuzzer found', () => {
  let fx: Fixture;
  let sender: Sender;
  let multi: { version: string; size: number };

  before(async () => {
    fx = await startFixture();
    sender = new Sender(fx.worker.url, 10_000);
    multi = (await (await fetch(`${fx.worker.url}/v1/stat/data/multi.bin`)).json()) as { version: string; size: number };
  });

  after(async () => {
    sender?.close();
    await fx?.cleanup();
  });

  test('HEAD of a page that is not cached answers 200 without a body (was a 500: a trailer on a bodiless answer)', async () => {
    const res = await sender.send({ method: 'HEAD', target: `/v1/page/data/multi.bin?v=${multi.version}&size=${multi.size}&i=2`, headers: [] });
    assert.equal(res.kind, 'response');
    if (res.kind !== 'response') return;
    assert.equal(res.status, 200, String(res.headers['x-fanout-error']));
    assert.equal(res.body.length, 0);
    assert.ok(fx.worker.running);
  });

  test('an admin body over the limit gets 413, and the next request on the same keep-alive connection is answered (it hung)', async () => {
    const big = Buffer.from(JSON.stringify({ rule: { mount: 'data', prefix: 'p'.repeat(17 * MiB) } }));
    const refused = await sender.send({ method: 'POST', target: '/v1/admin/pin', headers: [ADMIN], body: big });
    // The worker closes the connection after its 413; a client still sending may see the close first.
    if (refused.kind === 'response') assert.equal(refused.status, 413);
    else assert.equal(refused.kind, 'network');
    for (let i = 0; i < 3; i++) {
      const next = await sender.send({ method: 'POST', target: '/v1/admin/free', headers: [ADMIN], body: Buffer.from('{"keys":["0123456789abcdef"]}') });
      assert.equal(next.kind, 'response', `request ${i} after the refused body`);
      if (next.kind === 'response') assert.equal(next.status, 200);
    }
  });

  test('a chunked body over the limit is refused and the worker stays up (with no Content-Length to check first, the refusal took the process down)', async () => {
    const { host } = new URL(fx.worker.url);
    for (const [target, bytes] of [
      ['/ui/login', 8 * 1024],
      ['/v1/pages', 2 * MiB],
    ] as const) {
      const chunk = 'a'.repeat(1024);
      const body = `${chunk.length.toString(16)}\r\n${chunk}\r\n`.repeat(bytes / chunk.length) + '0\r\n\r\n';
      const request = `POST ${target} HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n${body}`;
      // The answer is a 413, unless the worker's close (it stops reading) reached this client first.
      const answer = await rawExchange(fx.worker.url, request);
      if (answer !== '') assert.match(answer, /^HTTP\/1\.1 413 /, target);
      assert.equal((await fetch(`${fx.worker.url}/healthz`)).status, 200, `the worker after ${target}`);
    }
    assert.ok(fx.worker.running);
  });

  test('a body the worker does not read (a refused call, a read, a report) and the client never finishes: answered, then the connection closes', async () => {
    // Before: each answer kept the connection alive, and node read and dropped the announced TiB
    // for as long as the client sent it (~290 MiB/s on one connection, until requestTimeout):
    // no credentials needed, as the refusal comes before the body.
    const huge = 'content-length: 1099511627776\r\ncontent-type: application/json\r\n';
    const cases: [string, RegExp][] = [
      [`POST /v1/admin/pin HTTP/1.1\r\nhost: localhost\r\n${huge}\r\n{"keys":`, /^HTTP\/1\.1 401 /],
      [`POST /v1/admin/pin HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer not-a-token-of-this-worker\r\n${huge}\r\n{"keys":`, /^HTTP\/1\.1 401 /],
      [`POST /v1/admin/pin HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer ${ADMIN_TOKEN}\r\n${huge}\r\n{"keys":`, /^HTTP\/1\.1 413 /],
      [`POST /ui/login HTTP/1.1\r\nhost: localhost\r\n${huge}\r\ntoken=`, /^HTTP\/1\.1 413 /],
      [`POST /v1/report/data/multi.bin?v=${encodeURIComponent(multi.version)}&size=${multi.size}&i=0 HTTP/1.1\r\nhost: localhost\r\n${huge}\r\nsome bytes`, /^HTTP\/1\.1 200 /],
      [`GET /v1/stat/data/multi.bin HTTP/1.1\r\nhost: localhost\r\n${huge}\r\nsome bytes`, /^HTTP\/1\.1 200 /],
      [`GET /v1/nosuchroute HTTP/1.1\r\nhost: localhost\r\n${huge}\r\nsome bytes`, /^HTTP\/1\.1 404 /],
    ];
    for (const [request, status] of cases) {
      const answer = await rawExchange(fx.worker.url, request, 5_000);
      assert.match(answer, status, request.split('\r\n')[0]);
      assert.match(answer, /\r\nconnection: close\r\n/i, request.split('\r\n')[0]);
    }
    // A small body keeps its connection: a refused call, then another on it.
    const twice = `POST /v1/admin/pin HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\r\n{}GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n`;
    const both = await rawExchange(fx.worker.url, twice, 5_000);
    assert.match(both, /^HTTP\/1\.1 401 [\s\S]*HTTP\/1\.1 200 /);
    assert.ok(fx.worker.running);
  });

  test('a body nested millions deep is INVALID_ARGUMENT before it is parsed (8 MB of it held the worker 4.7 s)', async () => {
    const deep = Buffer.from('['.repeat(500_000) + ']'.repeat(500_000));
    const res = await sender.send({ method: 'POST', target: '/v1/pages', headers: [['content-type', 'application/json']], body: deep });
    assert.equal(res.kind, 'response');
    if (res.kind !== 'response') return;
    assert.equal(res.status, 400);
    assert.match(JSON.parse(res.body.toString()).error.message, /nests deeper than 64 levels/);
  });

  test('a pin or TTL rule on a mount this worker lacks, or on a path no page can have, is refused (it was stored and shown for ever); unpin takes any', async () => {
    const post = async (route: string, body: object) => {
      const res = await sender.send({ method: 'POST', target: `/v1/admin/${route}`, headers: [['content-type', 'application/json'], ADMIN], body: Buffer.from(JSON.stringify(body)) });
      assert.equal(res.kind, 'response');
      return res.kind === 'response' ? { status: res.status, code: res.status >= 400 ? (JSON.parse(res.body.toString()) as { error: { code: string } }).error.code : undefined } : { status: 0 };
    };
    assert.deepEqual(await post('pin', { rule: { mount: 'nosuchmount', prefix: 'x' } }), { status: 404, code: 'UNKNOWN_MOUNT' });
    assert.deepEqual(await post('ttl', { rule: { mount: 'data', prefix: '../../x' }, ttlMs: 1000 }), { status: 400, code: 'INVALID_PATH' });
    assert.deepEqual(await post('pin', { rule: { mount: 'data', prefix: 'models/' } }), { status: 200, code: undefined });
    assert.deepEqual(await post('unpin', { rule: { mount: 'nosuchmount', prefix: 'x' } }), { status: 200, code: undefined });
    assert.deepEqual(await post('unpin', { rule: { mount: 'data', prefix: 'models/' } }), { status: 200, code: undefined });
  });

  test('an admin body that is JSON but not an object (null, an array) is INVALID_ARGUMENT, not a 500', async () => {
    for (const body of ['null', '[]', '["keys"]', '7', '"x"']) {
      const res = await sender.send({ method: 'POST', target: '/v1/admin/unpin', headers: [['content-type', 'application/json'], ADMIN], body: Buffer.from(body) });
      assert.equal(res.kind, 'response');
      if (res.kind !== 'response') return;
      assert.equal(res.status, 400, body);
      assert.equal((JSON.parse(res.body.toString()) as { error: { code: string } }).error.code, 'INVALID_ARGUMENT', body);
    }
  });

  test('a request line node:http cannot parse gets the API error body with a stable code, then the connection closes', async () => {
    const answer = await rawExchange(fx.worker.url, 'GET /v1/stat/data/hello\xff.txt HTTP/1.1\r\nhost: localhost\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.match(answer, /x-fanout-error: INVALID_ARGUMENT/);
    const body = answer.slice(answer.indexOf('\r\n\r\n') + 4);
    assert.equal((JSON.parse(body) as { error: { code: string } }).error.code, 'INVALID_ARGUMENT');
    const head = await rawExchange(fx.worker.url, 'HEAD /v1/stat/data/hello\xff.txt HTTP/1.1\r\nhost: localhost\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 400 /);
    assert.ok(head.endsWith('\r\n\r\n'), 'a HEAD answer carries no body');
  });

  test('an HTTP/1.1 request without Host is a 400 with a stable code from the worker and the gateway (was a bare 400)', async () => {
    const worker = await rawExchange(fx.worker.url, 'GET /v1/stat/data/hello.txt HTTP/1.1\r\nconnection: close\r\n\r\n');
    assert.match(worker, /^HTTP\/1\.1 400 /);
    assert.match(worker, /"code":"INVALID_ARGUMENT"/);
    const gateway = await rawExchange(fx.s3Url, 'GET /data/hello.txt HTTP/1.1\r\nconnection: close\r\n\r\n');
    assert.match(gateway, /^HTTP\/1\.1 400 /);
    assert.match(gateway, /<Code>InvalidArgument<\/Code>/);
    const http10 = await rawExchange(fx.worker.url, 'GET /healthz HTTP/1.0\r\n\r\n');
    assert.match(http10, /^HTTP\/1\.1 200 /, 'HTTP/1.0 needs no Host');
  });

  test('the S3 gateway answers a request it cannot parse with an S3 error document', async () => {
    const answer = await rawExchange(fx.s3Url, `GET /data/${randomBytes(2).toString('hex')}\xff HTTP/1.1\r\nhost: localhost\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.match(answer, /<Error><Code>InvalidRequest<\/Code>/);
    assert.ok(fx.worker.running);
  });

  test('an admin load at a crawling rate is refused (it never answered: 1 byte/s for 3 pages)', async () => {
    const pages = [0, 1, 2].map((index) => ({ mount: 'data', path: 'multi.bin', version: multi.version, size: multi.size, index }));
    const res = await fetch(`${fx.worker.url}/v1/admin/load`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ pages, rate: 1 }),
    });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'INVALID_ARGUMENT');
    assert.match(body.error.message, /rate/);
  });
});
