import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { Origin } from '../harness/origin.js';

/** The misbehaving origin does what it says: the fault tests rely on it. */
describe('test origin', () => {
  let origin: Origin;
  const data = randomBytes(200_000);

  before(async () => {
    origin = await Origin.start();
    await origin.put('f.bin', data);
  });
  after(() => origin.close());

  test('a normal origin honours Range, If-Match and sends a strong ETag', async () => {
    origin.normal();
    const res = await fetch(`${origin.url}/f.bin`, { headers: { range: 'bytes=10-19' } });
    assert.equal(res.status, 206);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), data.subarray(10, 20));
    const etag = res.headers.get('etag')!;
    assert.match(etag, /^"[0-9a-f]+"$/);
    assert.equal((await fetch(`${origin.url}/f.bin`, { headers: { 'if-match': '"other"' } })).status, 412);
    assert.equal((await fetch(`${origin.url}/f.bin`, { headers: { 'if-match': etag, range: 'bytes=0-0' } })).status, 206);
  });

  test('noEtag, ignoresRange and ignoresIfMatch change what the origin answers', async () => {
    origin.behave({ etag: 'none', ignoresRange: true, ignoresIfMatch: true }, 'f.bin');
    const res = await fetch(`${origin.url}/f.bin`, { headers: { range: 'bytes=10-19', 'if-match': '"x"' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('etag'), null);
    assert.equal((await res.arrayBuffer()).byteLength, data.length);
    origin.normal();
  });

  test('status answers every request with that status', async () => {
    origin.behave({ status: 503 });
    assert.equal((await fetch(`${origin.url}/f.bin`)).status, 503);
    origin.normal();
  });

  test('truncateAfter sends fewer bytes than Content-Length', async () => {
    origin.behave({ truncateAfter: 1000 });
    const got = await rawGet(`${origin.url}/f.bin`);
    assert.equal(got.length, 1000);
    assert.equal(got.contentLength, data.length);
    origin.normal();
  });

  test('replaceAfter swaps the bytes, keeping size and Last-Modified, after N bytes served', async () => {
    const first = await fetch(`${origin.url}/f.bin`);
    const lastModified = first.headers.get('last-modified');
    const etag = first.headers.get('etag');
    await first.arrayBuffer();
    const next = randomBytes(data.length);
    origin.behave({ replaceAfter: { bytes: 1, data: next } }, 'f.bin');
    const during = Buffer.from(await (await fetch(`${origin.url}/f.bin`)).arrayBuffer());
    assert.deepEqual(during, data, 'a response already under way keeps the old bytes');
    const later = await fetch(`${origin.url}/f.bin`);
    assert.deepEqual(Buffer.from(await later.arrayBuffer()), next);
    assert.equal(later.headers.get('last-modified'), lastModified);
    assert.notEqual(later.headers.get('etag'), etag);
    await origin.put('f.bin', data);
    origin.normal();
  });

  test('counters count requests and body bytes per path', async () => {
    const before = origin.counters.byPath.get('f.bin')!.requests;
    await (await fetch(`${origin.url}/f.bin`, { headers: { range: 'bytes=0-99' } })).arrayBuffer();
    assert.equal(origin.counters.byPath.get('f.bin')!.requests, before + 1);
    assert.ok(origin.counters.bytes >= 100);
  });
});

/** Body bytes until the connection ends, without failing on a short body. */
function rawGet(url: string): Promise<{ length: number; contentLength: number }> {
  return new Promise((resolve, reject) => {
    request(url, (res) => {
      let length = 0;
      res.on('data', (c: Buffer) => (length += c.length));
      const done = () => resolve({ length, contentLength: Number(res.headers['content-length']) });
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    })
      .on('error', reject)
      .end();
  });
}
