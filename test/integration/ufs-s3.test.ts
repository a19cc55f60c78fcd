import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { S3Ufs, openUfs } from '../../src/lib/ufs/index.js';
import { startS3Server, type S3TestServer } from '../harness/s3.js';
import { readAll, rejectsWith, sha } from '../harness/streams.js';

const MiB = 1024 * 1024;
const md5 = (b: Buffer | string) => createHash('md5').update(b).digest('hex');

// Keys and ranges avoid s3rver's defects: no key is a prefix of another key; no suffix ranges;
// no range ending at byte 0 ("bytes=0-0" returns the whole object); every listed prefix holds an
// object directly (s3rver drops a common prefix whose keys all sit two or more levels deeper).
describe('S3Ufs against s3rver', () => {
  let s3: S3TestServer;
  let ufs: S3Ufs;
  let root: S3Ufs;
  const big = randomBytes(3 * MiB + 11);

  before(async () => {
    s3 = await startS3Server();
    await s3.bucket('src');
    await s3.put('src', 'data/big.bin', big);
    await s3.put('src', 'data/small.txt', 'hello, s3');
    await s3.put('src', 'data/sub/x.txt', 'x');
    await s3.put('src', 'data/sub/y.txt', 'yy');
    await s3.put('src', 'data/other/o.txt', 'o');
    await s3.put('src', 'data/other/deep/z.txt', 'z');
    await s3.put('src', 'top.txt', 'top');
    ufs = new S3Ufs('src', 'data/', s3.options);
    root = new S3Ufs('src', '', s3.options);
  });

  after(async () => {
    await ufs?.close();
    await root?.close();
    await s3?.stop();
  });

  test('stat gives size, mtime and the ETag as version', async () => {
    const info = await ufs.stat('big.bin');
    assert.equal(info.path, 'big.bin');
    assert.equal(info.size, big.length);
    assert.equal(info.version, md5(big));
    assert.ok(info.mtimeMs > 0);
    assert.equal((await root.stat('data/small.txt')).version, md5('hello, s3'));
  });

  test('stat errors: missing key, prefix as directory, root', async () => {
    await assert.rejects(ufs.stat('missing.bin'), rejectsWith('NOT_FOUND'));
    await assert.rejects(ufs.stat('sub'), rejectsWith('IS_A_DIRECTORY'));
    await assert.rejects(ufs.stat('other/deep'), rejectsWith('IS_A_DIRECTORY'));
    await assert.rejects(root.stat('data'), rejectsWith('IS_A_DIRECTORY'));
    await assert.rejects(ufs.stat(''), rejectsWith('IS_A_DIRECTORY'));
    await assert.rejects(ufs.stat('../top.txt'), rejectsWith('INVALID_PATH'));
    await assert.rejects(new S3Ufs('no-such-bucket', '', s3.options).stat('x'), rejectsWith('SOURCE_ERROR'));
  });

  test('list shows one level: files with versions, prefixes as dirs', async () => {
    const entries = await ufs.list('');
    assert.deepEqual(
      entries.map((e) => [e.name, e.type]),
      [
        ['big.bin', 'file'],
        ['other', 'dir'],
        ['small.txt', 'file'],
        ['sub', 'dir'],
      ],
    );
    const bigEntry = entries.find((e) => e.name === 'big.bin')!;
    assert.equal(bigEntry.size, big.length);
    assert.equal(bigEntry.version, md5(big));
    assert.deepEqual(
      (await ufs.list('sub')).map((e) => [e.name, e.size]),
      [
        ['x.txt', 1],
        ['y.txt', 2],
      ],
    );
    assert.deepEqual(
      (await root.list('')).map((e) => [e.name, e.type]),
      [
        ['data', 'dir'],
        ['top.txt', 'file'],
      ],
    );
    await assert.rejects(ufs.list('small.txt'), rejectsWith('NOT_A_DIRECTORY'));
    await assert.rejects(ufs.list('nope'), rejectsWith('NOT_FOUND'));
  });

  test('read returns exactly the bytes of each range', async () => {
    const { version } = await ufs.stat('big.bin');
    for (const [offset, length] of [
      [0, big.length],
      [1, 1],
      [0, 2],
      [big.length - 1, 1],
      [MiB - 1, MiB + 2],
      [2 * MiB, big.length - 2 * MiB],
      [7, 0],
    ] as const) {
      const got = await readAll(ufs.read('big.bin', version, offset, length));
      assert.equal(got.length, length, `length of [${offset}, +${length})`);
      assert.equal(sha(got), sha(big.subarray(offset, offset + length)), `bytes of [${offset}, +${length})`);
    }
  });

  test('read errors: missing key, ranges past the end', async () => {
    const { version } = await ufs.stat('big.bin');
    await assert.rejects(readAll(ufs.read('missing.bin', version, 0, 1)), rejectsWith('NOT_FOUND'));
    await assert.rejects(readAll(ufs.read('big.bin', version, big.length - 4, 8)), rejectsWith('SOURCE_TRUNCATED'));
    await assert.rejects(readAll(ufs.read('big.bin', version, big.length + 10, 1)), rejectsWith('RANGE_NOT_SATISFIABLE'));
  });

  test('an overwritten object read at its old ETag is SOURCE_CHANGED', async () => {
    await s3.put('src', 'data/changing.bin', 'version one');
    const old = await ufs.stat('changing.bin');
    await s3.put('src', 'data/changing.bin', 'version two');
    await assert.rejects(readAll(ufs.read('changing.bin', old.version, 0, 11)), rejectsWith('SOURCE_CHANGED'));
    await assert.rejects(readAll(ufs.read('changing.bin', old.version, 0, 0)), rejectsWith('SOURCE_CHANGED'));
    const now = await ufs.stat('changing.bin');
    assert.notEqual(now.version, old.version);
    assert.equal((await readAll(ufs.read('changing.bin', now.version, 8, 3))).toString(), 'two');
  });

  test('an aborted read errors with ABORTED', async () => {
    const { version } = await ufs.stat('big.bin');
    const ac = new AbortController();
    const stream = ufs.read('big.bin', version, 0, big.length, ac.signal);
    await assert.rejects(
      (async () => {
        for await (const _chunk of stream) ac.abort();
      })(),
      rejectsWith('ABORTED'),
    );
    await assert.rejects(ufs.stat('big.bin', AbortSignal.abort()), rejectsWith('ABORTED'));
  });

  test('openUfs("s3://bucket/prefix") reaches the same objects', async () => {
    const opened = openUfs('s3://src/data/sub', s3.options);
    try {
      assert.equal((await opened.stat('y.txt')).size, 2);
      assert.deepEqual(
        (await opened.list('')).map((e) => e.name),
        ['x.txt', 'y.txt'],
      );
    } finally {
      await opened.close?.();
    }
  });
});
