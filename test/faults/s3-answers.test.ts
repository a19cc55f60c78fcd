import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { S3Ufs } from '../../src/lib/ufs/index.js';
import { readAll, rejectsWith } from '../harness/streams.js';
import { MisbehavingS3 } from '../harness/s3misbehaving.js';
import { WorkerProcess } from '../harness/workers.js';
import { assertAlive, assertFailed, get } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * The S3 source over a server whose listings never end or whose error bodies never end: the
 * source refuses them with SOURCE_ERROR instead of following them for ever or reading them into
 * memory whole. In-process for the adapter's own answers; a worker process for what clients see.
 */
describe('the S3 source over a server with endless listings or error bodies', () => {
  let s3: MisbehavingS3;
  let ufs: S3Ufs;

  before(async () => {
    s3 = await MisbehavingS3.start();
    ufs = new S3Ufs('b', '', { endpoint: s3.url, accessKeyId: 'test', secretAccessKey: 'test', region: 'us-east-1' }, undefined, {
      label: '/s3data',
      deadlines: { connectMs: 2000, firstByteMs: 5000, idleMs: 5000 },
    });
  });
  after(async () => {
    await ufs.close();
    await s3.close();
  });
  afterEach(() => s3.behave({}));

  test('a listing over several pages lists every page once', async () => {
    const before = s3.counters.lists;
    const entries = await ufs.list('dir');
    assert.deepEqual(
      entries.map((e) => e.name),
      ['k0.bin', 'k1.bin', 'k2.bin'],
    );
    assert.equal(s3.counters.lists - before, 3);
  });

  test('a listing whose continuation token comes back is SOURCE_ERROR after one repeat, not followed for ever', { timeout: 20_000 }, async () => {
    s3.behave({ listing: 'loop' });
    const before = s3.counters.lists;
    await assert.rejects(ufs.list('dir'), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /\/s3data\/dir: the S3 server's listing loops/.test(err.message));
    assert.equal(s3.counters.lists - before, 2, 'the page with the repeated token is the last one asked for');
  });

  /** A source of the crafted server whose listings stop past `entries` (limits.sourceListEntries). */
  const ufsListingAtMost = (entries: number) =>
    new S3Ufs('b', '', { endpoint: s3.url, accessKeyId: 'test', secretAccessKey: 'test', region: 'us-east-1' }, undefined, { label: '/s3data', maxListEntries: entries });

  test('a listing that hands out a fresh token with every page for ever is SOURCE_ERROR past its entry bound, not followed for ever', { timeout: 30_000 }, async () => {
    s3.behave({ listing: 'endless' });
    const bounded = ufsListingAtMost(50);
    try {
      const before = s3.counters.lists;
      await assert.rejects(
        bounded.list('dir'),
        (err: { code?: string; message: string }) =>
          err.code === 'SOURCE_ERROR' && /^\/s3data\/dir: the S3 server's listing goes on past 50 entries \(51 pages/.test(err.message) && /limits\.sourceListEntries/.test(err.message),
      );
      assert.equal(s3.counters.lists - before, 51, 'the page past the bound is the last one asked for');
    } finally {
      await bounded.close();
    }
  });

  test('a listing of few but long names for ever is SOURCE_ERROR once its names pass 256 characters per allowed entry', { timeout: 30_000 }, async () => {
    s3.behave({ listing: 'endless', keyPadding: 1000 });
    const bounded = ufsListingAtMost(50);
    try {
      const before = s3.counters.lists;
      await assert.rejects(
        bounded.list('dir'),
        (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /^\/s3data\/dir: the S3 server's listing holds more than 12800 characters of names \(13 entries, 13 pages/.test(err.message),
      );
      assert.equal(s3.counters.lists - before, 13);
    } finally {
      await bounded.close();
    }
  });

  test('a listing of empty pages with fresh tokens for ever is SOURCE_ERROR at the whole listing\'s deadline', { timeout: 30_000 }, async () => {
    s3.behave({ listing: 'endless-empty' });
    const bounded = new S3Ufs('b', '', { endpoint: s3.url, accessKeyId: 'test', secretAccessKey: 'test', region: 'us-east-1' }, undefined, {
      label: '/s3data',
      deadlines: { listMs: 1500 },
    });
    try {
      await assert.rejects(
        bounded.list('dir'),
        (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /^\/s3data\/dir: the S3 server's listing did not end within 1500 ms \(timeouts\.sourceList/.test(err.message),
      );
    } finally {
      await bounded.close();
    }
  });

  test('a listing said to be truncated with no token to go on is SOURCE_ERROR, not a part of the directory passed off as all', async () => {
    s3.behave({ listing: 'no-token' });
    await assert.rejects(ufs.list('dir'), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /truncated but gives no NextContinuationToken/.test(err.message));
  });

  test('keys and prefixes outside the asked prefix (a server that ignores Prefix) are not listed under other names', async () => {
    s3.behave({ listing: 'ignores-prefix' });
    const entries = await ufs.list('dir');
    assert.deepEqual(
      entries.map((e) => `${e.type}:${e.name}`),
      ['file:in.bin'],
    );
  });

  test('a missing key on a server that ignores Prefix is NOT_FOUND, for stat and list, not a directory', async () => {
    s3.behave({ listing: 'elsewhere' });
    await assert.rejects(ufs.stat('missing.bin'), (err: { code?: string; message: string }) => err.code === 'NOT_FOUND' && err.message === '/s3data/missing.bin does not exist');
    await assert.rejects(ufs.list('missing'), (err: { code?: string; message: string }) => err.code === 'NOT_FOUND' && err.message === '/s3data/missing does not exist');
  });

  test('a server that ignores Delimiter (every key under the prefix, no common prefixes) still lists the sub-directories, once each', async () => {
    s3.behave({ listing: 'ignores-delimiter' });
    const entries = await ufs.list('dir');
    assert.deepEqual(
      entries.map((e) => `${e.type}:${e.name}`),
      ['file:a.bin', 'dir:other', 'dir:sub', 'file:z.bin'],
    );
  });

  test('a bucket in another region (301 PermanentRedirect) fails stat, list and read with SOURCE_ERROR naming the region and the setting', async () => {
    s3.behave({ movedTo: 'eu-west-1' });
    for (const attempt of [() => ufs.stat('f.bin'), () => ufs.list('dir'), () => readAll(ufs.read('f.bin', 'e', 0, 100))]) {
      await assert.rejects(
        attempt(),
        (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /bucket b is in region eu-west-1/.test(err.message) && /s3\.region/.test(err.message),
      );
    }
  });

  test('an HTML error page (a proxy in front of the server) fails stat, list and read with SOURCE_ERROR saying so, not an XML parse error', async () => {
    s3.behave({ htmlError: 502 });
    for (const attempt of [() => ufs.stat('f.bin'), () => ufs.list('dir'), () => readAll(ufs.read('f.bin', 'e', 0, 100))]) {
      await assert.rejects(
        attempt(),
        (err: { code?: string; message: string }) =>
          err.code === 'SOURCE_ERROR' && /: the S3 endpoint answered HTTP 502 with an HTML page, not an S3 answer: a proxy/.test(err.message) && !/parse error|UnknownError/.test(err.message),
      );
    }
  });

  test('an error without a body (an answer to HEAD) says the status and, for 403, that access is denied, not "UnknownError"', async () => {
    s3.behave({ bareError: 403 });
    await assert.rejects(
      ufs.stat('f.bin'),
      (err: { code?: string; message: string }) =>
        err.code === 'SOURCE_ERROR' && err.message === '/s3data/f.bin: the S3 server answered HTTP 403 with no error code (an answer to HEAD has no body): access denied, the credentials or the bucket policy do not allow it',
    );
    s3.behave({ bareError: 500 });
    await assert.rejects(ufs.stat('f.bin'), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /answered HTTP 500 with no error code/.test(err.message));
  });

  test('an object whose HEAD gives a size past 2^53 is SOURCE_ERROR at stat, not a size rounded to another', async () => {
    s3.behave({ headLength: '9007199254740993' });
    await assert.rejects(ufs.stat('f.bin'), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /^\/s3data\/f\.bin: the source gives a size of 9007199254740992 bytes/.test(err.message));
  });

  test('an object whose HEAD gives no Content-Length is SOURCE_ERROR at stat, not an empty object', async () => {
    s3.behave({ headLength: 'none' });
    await assert.rejects(ufs.stat('f.bin'), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /^\/s3data\/f\.bin: the S3 server's HEAD answer gives no Content-Length/.test(err.message));
  });

  test('a listing entry whose Size is missing or not a size fanout can read is listed without a size (readers stat it), not as 0 or another number', async () => {
    s3.behave({ listing: 'bad-sizes' });
    const entries = await ufs.list('dir');
    assert.deepEqual(
      entries.map(({ name, size, version }) => ({ name, size, version })),
      [
        { name: 'fraction.bin', size: undefined, version: 'fraction.bin' },
        { name: 'good.bin', size: 5, version: 'good.bin' },
        { name: 'huge.bin', size: undefined, version: 'huge.bin' },
        { name: 'negative.bin', size: undefined, version: 'negative.bin' },
        // No ETag and no size: no version either (a size-mtime version needs the size).
        { name: 'none.bin', size: undefined, version: undefined },
      ],
    );
  });

  test('an error answer with a 64 MiB body fails a listing and a read with SOURCE_ERROR, read no further than its limit', async () => {
    for (const attempt of [() => ufs.list('dir'), () => readAll(ufs.read('f.bin', 'e', 0, 100))]) {
      s3.behave({ errorBytes: 64 * MiB });
      const sentBefore = s3.counters.bodyBytes;
      await assert.rejects(
        attempt(),
        (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /^\/s3data\/.*larger than 1048576 bytes/.test(err.message) && !/Deserialization/.test(err.message),
      );
      // Socket buffers hold a few MiB ahead of the reader; without the limit the SDK took all 64 MiB into memory.
      const sent = s3.counters.bodyBytes - sentBefore;
      assert.ok(sent < 32 * MiB, `the server wrote ${sent} bytes of its error body`);
    }
  });
});

describe('a worker over an S3 server whose listing loops', () => {
  let s3: MisbehavingS3;
  let worker: WorkerProcess;

  before(async () => {
    s3 = await MisbehavingS3.start();
    worker = await WorkerProcess.start({
      id: 's3-answers',
      mounts: { s3m: 's3://b' },
      s3: { endpoint: s3.url, accessKeyId: 'test', secretAccessKey: 'test', region: 'us-east-1' },
      timeouts: { sourceConnect: '3s', sourceFirstByte: '3s', sourceIdle: '3s', sourceList: '20s' },
      limits: { sourceListEntries: 40 },
    });
  });
  after(async () => {
    await worker?.destroy();
    await s3?.close();
  });

  test('/v1/list answers SOURCE_ERROR, the server is asked twice, and the worker stays up', { timeout: 20_000 }, async () => {
    s3.behave({ listing: 'loop' });
    const before = s3.counters.lists;
    const answer = await get(`${worker.url}/v1/list/s3m/dir`);
    assertFailed(answer, 'SOURCE_ERROR');
    assert.match(answer.message ?? '', /listing loops/);
    assert.equal(s3.counters.lists - before, 2);
    await assertAlive(worker);
    s3.behave({});
    const listed = await get(`${worker.url}/v1/list/s3m/other`);
    assert.equal(listed.status, 200, listed.message);
  });

  test('/v1/list of a listing with fresh tokens for ever answers SOURCE_ERROR naming limits.sourceListEntries, and the worker stays up', { timeout: 60_000 }, async () => {
    s3.behave({ listing: 'endless' });
    const before = s3.counters.lists;
    const answer = await get(`${worker.url}/v1/list/s3m/endless`);
    assertFailed(answer, 'SOURCE_ERROR');
    assert.match(answer.message ?? '', /past 40 entries .*limits\.sourceListEntries/);
    assert.equal(s3.counters.lists - before, 41);
    await assertAlive(worker);
    s3.behave({});
    const listed = await get(`${worker.url}/v1/list/s3m/other2`);
    assert.equal(listed.status, 200, listed.message);
  });
});
