import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_HEAD_BYTES, ResponseParseError, ResponseParser, type ResponseHead } from './parser.js';

interface Parsed {
  head?: ResponseHead;
  body: Buffer[];
  trailers?: Record<string, string>;
}

function parser(): { p: ResponseParser; out: Parsed } {
  const out: Parsed = { body: [] };
  const p = new ResponseParser({
    onHead: (head) => (out.head = head),
    onBody: (chunk) => out.body.push(chunk),
    onComplete: (trailers) => (out.trailers = trailers),
  });
  return { p, out };
}

/** Feeds `wire` in pieces cut at `cuts` (copies, as a socket would produce them). */
function feed(wire: Buffer, cuts: number[]): Parsed {
  const { p, out } = parser();
  let at = 0;
  for (const cut of [...cuts, wire.length]) {
    if (cut > at) p.execute(Buffer.from(wire.subarray(at, cut)));
    at = Math.max(at, cut);
  }
  return out;
}

const CHUNKED = Buffer.from(
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-fanout-crc32, x-fanout-error\r\nX-Dup: a\r\nx-dup: b\r\n\r\n' +
    '5;name=value;other="quoted ; text"\r\nhello\r\n' +
    '1\r\n \r\n' +
    'A  ; ext\r\n0123456789\r\n' +
    '0\r\nx-fanout-crc32: 1a2b3c\r\nX-Fanout-Error:   SOURCE_TRUNCATED  \r\n\r\n',
);

function assertChunkedParsed(out: Parsed, where: string): void {
  assert.equal(out.head?.statusCode, 200, where);
  assert.equal(out.head?.headers['x-dup'], 'a, b', where);
  assert.equal(Buffer.concat(out.body).toString(), 'hello 0123456789', where);
  assert.deepEqual(out.trailers, { 'x-fanout-crc32': '1a2b3c', 'x-fanout-error': 'SOURCE_TRUNCATED' }, where);
}

describe('the lean response parser', () => {
  test('a chunked response with extensions and trailers parses the same wherever the reads split it', () => {
    assertChunkedParsed(feed(CHUNKED, []), 'one read');
    for (let cut = 1; cut < CHUNKED.length; cut++) assertChunkedParsed(feed(CHUNKED, [cut]), `split at ${cut}`);
    for (let cut = 1; cut < CHUNKED.length - 1; cut++) assertChunkedParsed(feed(CHUNKED, [cut, cut + 1]), `a 1-byte read at ${cut}`);
    assertChunkedParsed(feed(CHUNKED, [...CHUNKED.keys()]), 'every byte alone');
  });

  test('a chunked response without trailers ends at its empty last chunk, split anywhere', () => {
    const wire = Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
    for (let cut = 0; cut < wire.length; cut++) {
      const out = feed(wire, [cut]);
      assert.equal(Buffer.concat(out.body).toString(), 'abc');
      assert.deepEqual(out.trailers, {});
    }
  });

  test('content-length body chunks are views of the read buffers, not copies', () => {
    const { p, out } = parser();
    const first = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234');
    const second = Buffer.from('56789');
    p.execute(first);
    p.execute(second);
    assert.equal(out.body.length, 2);
    assert.equal(out.body[0]!.buffer, first.buffer);
    assert.equal(out.body[1], second);
    assert.deepEqual(out.trailers, {});
    assert.equal(p.reusable, true);
  });

  test('bytes after the end of a response make the connection not reusable', () => {
    const { p } = parser();
    p.execute(Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA'));
    assert.equal(p.done, true);
    assert.equal(p.reusable, false);
  });

  test('connection: close and HTTP/1.0 responses are not reused; informational heads are skipped', () => {
    const close = feed(Buffer.from('HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n'), []);
    assert.equal(close.head?.keepAlive, false);
    const old = feed(Buffer.from('HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n'), []);
    assert.equal(old.head?.keepAlive, false);
    const early = feed(Buffer.from('HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}'), [30]);
    assert.equal(early.head?.statusCode, 404);
    assert.equal(Buffer.concat(early.body).toString(), '{}');
  });

  test('a body without length runs until the connection closes', () => {
    const { p, out } = parser();
    p.execute(Buffer.from('HTTP/1.1 200 OK\r\n\r\nsome'));
    p.execute(Buffer.from(' bytes'));
    assert.equal(out.trailers, undefined);
    p.end();
    assert.equal(Buffer.concat(out.body).toString(), 'some bytes');
    assert.equal(p.reusable, false);
  });

  test('a connection closed mid-body or before any byte is an error, told apart by `started`', () => {
    const { p } = parser();
    assert.throws(() => p.end(), (e: ResponseParseError) => /before the response/.test(e.message));
    assert.equal(p.started, false);
    const cut = parser();
    cut.p.execute(Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123'));
    assert.equal(cut.p.started, true);
    assert.throws(() => cut.p.end(), (e: ResponseParseError) => e instanceof ResponseParseError && /middle/.test(e.message));
    const chunked = parser();
    chunked.p.execute(Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab'));
    assert.throws(() => chunked.p.end(), ResponseParseError);
  });

  test('an oversized head is refused, whole or arriving in pieces', () => {
    const big = `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`;
    assert.throws(() => parser().p.execute(Buffer.from(big)), /larger than/);
    const { p } = parser();
    assert.throws(() => {
      for (let at = 0; at < big.length; at += 1000) p.execute(Buffer.from(big.slice(at, at + 1000)));
    }, /larger than/);
    const trailers = parser();
    trailers.p.execute(Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n'));
    assert.throws(() => trailers.p.execute(Buffer.from(`x-t: ${'b'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`)), /larger than/);
  });

  test('bad framing is refused: lengths, chunk sizes, status lines, header names, missing CRLF', () => {
    const bad = [
      'HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffff\r\n',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY',
      'HTTP/2 200\r\n\r\n',
      'HTTP/1.1 20 OK\r\n\r\n',
      'garbage\r\n\r\n',
      'HTTP/1.1 200 OK\r\nbad header\r\n\r\n',
      'HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\n\r\n',
      'HTTP/1.1 200 OK\r\nx-a : 1\r\n\r\n',
      'HTTP/1.1 101 Switching Protocols\r\n\r\n',
    ];
    for (const wire of bad) assert.throws(() => parser().p.execute(Buffer.from(wire)), ResponseParseError, JSON.stringify(wire));
  });

  test('a field with one value keeps its first when repeated (as node:http and undici read it); list fields are joined', () => {
    const { p, out } = parser();
    p.execute(Buffer.from('HTTP/1.1 200 OK\r\nETag: "v1"\r\nETag: "v2"\r\nLast-Modified: a\r\nlast-modified: b\r\nVary: x\r\nVary: y\r\ncontent-length: 0\r\n\r\n'));
    assert.equal(out.head?.headers.etag, '"v1"');
    assert.equal(out.head?.headers['last-modified'], 'a');
    assert.equal(out.head?.headers.vary, 'x, y');
  });

  test('content-length and chunked together: chunked wins and the connection is not reused', () => {
    const { p, out } = parser();
    p.execute(Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'));
    assert.equal(Buffer.concat(out.body).toString(), 'ok');
    assert.equal(p.done, true);
    assert.equal(p.reusable, false);
  });
});
