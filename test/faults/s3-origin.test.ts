import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { S3Ufs } from '../../src/lib/ufs/index.js';
import { readAll, rejectsWith, sha } from '../harness/streams.js';
import { Origin } from '../harness/origin.js';

const MiB = 1024 * 1024;

/**
 * The S3 source over the misbehaving origin: path-style GetObject/HeadObject are plain GET/HEAD
 * of /bucket/key with Range and If-Match, which the origin serves (it ignores the signature).
 * In-process on purpose: an unhandled stream error would take this test process down.
 */
describe('the S3 source over a misbehaving server', () => {
  let origin: Origin;
  let ufs: S3Ufs;
  const data = randomBytes(2 * MiB + 77);

  before(async () => {
    origin = await Origin.start();
    await origin.put('bucket/f.bin', data);
    ufs = new S3Ufs('bucket', '', { endpoint: origin.url, accessKeyId: 'test', secretAccessKey: 'test', region: 'us-east-1' }, undefined, {
      label: '/s3data',
      deadlines: { connectMs: 2000, firstByteMs: 2000, idleMs: 2000 },
    });
  });
  after(async () => {
    await ufs.close();
    await origin.close();
  });
  afterEach(() => origin.normal());

  test('reads exactly the bytes of a range from a well-behaved server', async () => {
    const { version } = await ufs.stat('f.bin');
    assert.equal(sha(await readAll(ufs.read('f.bin', version, MiB, MiB))), sha(data.subarray(MiB, 2 * MiB)));
  });

  test('a server that ignores If-Match: a bogus version is SOURCE_CHANGED', async () => {
    origin.behave({ ignoresIfMatch: true });
    await assert.rejects(readAll(ufs.read('f.bin', 'bogus', 0, MiB)), rejectsWith('SOURCE_CHANGED'));
  });

  test('a server without ETags: read by size and Last-Modified, without If-Match; a change between stat and read is SOURCE_CHANGED', async () => {
    await origin.put('bucket/plain.bin', data, new Date('2026-01-02T03:04:05Z'));
    origin.behave({ etag: 'none' });
    const { version } = await ufs.stat('plain.bin');
    assert.equal(version, `${data.length}-${Date.parse('2026-01-02T03:04:05Z')}`);
    assert.equal(sha(await readAll(ufs.read('plain.bin', version, MiB, MiB))), sha(data.subarray(MiB, 2 * MiB)));
    await origin.put('bucket/plain.bin', data, new Date('2026-01-02T03:04:06Z'));
    await assert.rejects(readAll(ufs.read('plain.bin', version, MiB, MiB)), rejectsWith('SOURCE_CHANGED'));
  });

  test('a weak ETag is no version (it promises equivalent content, not the same bytes): size and Last-Modified are', async () => {
    await origin.put('bucket/weak.bin', data, new Date('2026-01-02T03:04:05Z'));
    origin.behave({ etag: 'weak' });
    const { version } = await ufs.stat('weak.bin');
    assert.equal(version, `${data.length}-${Date.parse('2026-01-02T03:04:05Z')}`);
    assert.equal(sha(await readAll(ufs.read('weak.bin', version, 0, MiB))), sha(data.subarray(0, MiB)));
  });

  test('a server that ignores Range is SOURCE_ERROR, never the wrong bytes', async () => {
    const { version } = await ufs.stat('f.bin');
    origin.behave({ ignoresRange: true });
    await assert.rejects(readAll(ufs.read('f.bin', version, MiB, MiB)), rejectsWith('SOURCE_ERROR'));
  });

  test('a body cut short is SOURCE_TRUNCATED, naming the mount path', async () => {
    const { version } = await ufs.stat('f.bin');
    origin.behave({ truncateAfter: 100_000 });
    await assert.rejects(readAll(ufs.read('f.bin', version, 0, MiB)), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'SOURCE_TRUNCATED', err.message);
      assert.match(err.message, /^\/s3data\/f\.bin/);
      return true;
    });
  });

  test('a reset connection is SOURCE_ERROR', async () => {
    const { version } = await ufs.stat('f.bin');
    origin.behave({ resetAfter: 100_000 });
    await assert.rejects(readAll(ufs.read('f.bin', version, 0, MiB)), (err: Error & { code?: string }) => {
      assert.ok(err.code === 'SOURCE_ERROR' || err.code === 'SOURCE_TRUNCATED', `${err.code}: ${err.message}`);
      return true;
    });
  });

  test('a server that answers nothing fails stat and read with SOURCE_ERROR after the deadline', async () => {
    const { version } = await ufs.stat('f.bin');
    origin.behave({ hang: 'nothing' });
    await assert.rejects(ufs.stat('f.bin'), rejectsWith('SOURCE_ERROR'));
    await assert.rejects(readAll(ufs.read('f.bin', version, 0, MiB)), rejectsWith('SOURCE_ERROR'));
  });

  test('a server that sends headers then nothing fails the read with SOURCE_ERROR', async () => {
    const { version } = await ufs.stat('f.bin');
    origin.behave({ hang: 'headers' });
    await assert.rejects(readAll(ufs.read('f.bin', version, 0, MiB)), rejectsWith('SOURCE_ERROR'));
  });

  test('a 416 for a range inside the object is SOURCE_ERROR, not a range past its end', async () => {
    const { version } = await ufs.stat('f.bin');
    origin.behave({ refusesRange: true });
    await assert.rejects(readAll(ufs.read('f.bin', version, MiB, MiB)), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /refused bytes 1048576-2097151 \(HTTP 416\)/.test(err.message));
    origin.normal();
    await assert.rejects(readAll(ufs.read('f.bin', version, data.length, 1)), rejectsWith('RANGE_NOT_SATISFIABLE'));
  });

  test('a Content-Range whose unit is written "Bytes" is read as the byte range it is', async () => {
    const { version } = await ufs.stat('f.bin');
    origin.behave({ rangeUnit: 'Bytes' });
    assert.equal(sha(await readAll(ufs.read('f.bin', version, MiB, MiB))), sha(data.subarray(MiB, 2 * MiB)));
  });

  test('a 5xx is SOURCE_ERROR', async () => {
    const { version } = await ufs.stat('f.bin');
    origin.behave({ status: 500 });
    await assert.rejects(readAll(ufs.read('f.bin', version, 0, MiB)), rejectsWith('SOURCE_ERROR'));
  });
});

test('a manifest PUT that the server takes and never answers fails on its deadline (release publish hung for ever)', { timeout: 30_000 }, async () => {
  const { createServer } = await import('node:http');
  const held: import('node:http').ServerResponse[] = [];
  // HEAD: no such object yet; a listing: nothing under it; PUT: the body is read, then no answer.
  const server = createServer((req, res) => {
    if (req.method === 'HEAD') return void res.writeHead(404).end();
    if (req.method === 'GET') {
      return void res
        .writeHead(200, { 'content-type': 'application/xml' })
        .end('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>bucket</Name><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>');
    }
    req.resume();
    held.push(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as import('node:net').AddressInfo;
  const ufs = new S3Ufs('bucket', '', { endpoint: `http://127.0.0.1:${port}`, accessKeyId: 'test', secretAccessKey: 'test', region: 'us-east-1' }, undefined, {
    deadlines: { connectMs: 2000, firstByteMs: 500, idleMs: 2000 },
  });
  try {
    await assert.rejects(ufs.writeExclusive('.fanout-releases/r/v1.json', Buffer.from('{}')), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /v1\.json: the source gave no answer within/.test(err.message));
  } finally {
    await ufs.close();
    for (const res of held) res.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
