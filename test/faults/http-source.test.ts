import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { HttpUfs } from '../../src/lib/ufs/index.js';
import { Origin } from '../harness/origin.js';
import { readAll, rejectsWith, sha } from '../harness/streams.js';

const MiB = 1024 * 1024;

/**
 * The HTTP source in-process over the misbehaving origin: redirects (what each page read costs,
 * what HTTP lets be reused, a target that stops answering, where redirects may lead) and content
 * codings read by a source that never stat'ed the file (a page owner asked for a page by a peer).
 */
describe('the HTTP source over redirects and content codings', () => {
  let origin: Origin;
  let ufs: HttpUfs;
  const size = 4 * MiB;
  const data = randomBytes(size);
  let files = 0;

  before(async () => {
    origin = await Origin.start();
    ufs = new HttpUfs(origin.url, { label: '/web', deadlines: { connectMs: 2000, firstByteMs: 5000, idleMs: 5000 } });
  });
  after(async () => {
    await ufs.close();
    await origin.close();
  });
  afterEach(() => origin.normal());

  /** A new file and a path that redirects to it: nothing an earlier test remembered answers for them. */
  async function redirected(redirect: { status: number; cacheControl?: string }): Promise<{ name: string; moved: string }> {
    const name = `f${++files}.bin`;
    await origin.put(name, data);
    const moved = `moved-${name}`;
    origin.behave({ redirect: { to: name, ...redirect } }, moved);
    return { name, moved };
  }

  const getsFor = (...paths: string[]) => origin.counters.log.filter((r) => r.method === 'GET' && paths.includes(r.path)).length;

  /** Reads pages 0..3 of 1 MiB one after another; the GET requests they cost. */
  async function pageReads(moved: string, name: string, version: string): Promise<number> {
    const before = getsFor(moved, name);
    for (let i = 0; i < 4; i++) {
      const got = await readAll(ufs.read(moved, version, i * MiB, MiB));
      assert.equal(sha(got), sha(data.subarray(i * MiB, (i + 1) * MiB)), `page ${i}`);
    }
    return getsFor(moved, name) - before;
  }

  for (const status of [301, 308]) {
    test(`a permanent redirect (${status}) is followed once: later pages ask its target directly`, async () => {
      const { name, moved } = await redirected({ status });
      const { version } = await ufs.stat(moved);
      // Before: 3 requests a page (the lean client's redirect, undici again from the file's URL, the target): 12.
      assert.equal(await pageReads(moved, name, version), 2 + 3);
    });
  }

  test('a temporary redirect (302, 307) is followed for every page, from where it points (2 requests a page, not 3)', async () => {
    for (const status of [302, 307]) {
      const { name, moved } = await redirected({ status });
      const { version } = await ufs.stat(moved);
      assert.equal(await pageReads(moved, name, version), 2 * 4, String(status));
    }
  });

  test('a temporary redirect with Cache-Control max-age is reused while fresh; a permanent one with no-store is not', async () => {
    const fresh = await redirected({ status: 302, cacheControl: 'private, max-age=3600' });
    assert.equal(await pageReads(fresh.moved, fresh.name, (await ufs.stat(fresh.moved)).version), 2 + 3);
    const noStore = await redirected({ status: 301, cacheControl: 'no-store' });
    assert.equal(await pageReads(noStore.moved, noStore.name, (await ufs.stat(noStore.moved)).version), 2 * 4);
  });

  test('a remembered target that fails (an expired signed URL: 403) is dropped and the redirect followed afresh: the read succeeds', async () => {
    const { name, moved } = await redirected({ status: 301 });
    const { version } = await ufs.stat(moved);
    await pageReads(moved, name, version);
    // The file's redirect now points elsewhere (same bytes), and the old target refuses.
    const other = `other-${name}`;
    await origin.put(other, data);
    origin.behave({ redirect: { to: other, status: 301 } }, moved);
    origin.behave({ status: 403 }, name);
    const before = { old: getsFor(name), moved: getsFor(moved), other: getsFor(other) };
    assert.equal(sha(await readAll(ufs.read(moved, version, MiB, MiB))), sha(data.subarray(MiB, 2 * MiB)));
    assert.deepEqual({ old: getsFor(name) - before.old, moved: getsFor(moved) - before.moved, other: getsFor(other) - before.other }, { old: 1, moved: 1, other: 1 });
    // From then on the new target alone.
    const next = getsFor(moved, name, other);
    await readAll(ufs.read(moved, version, 2 * MiB, MiB));
    assert.equal(getsFor(moved, name, other) - next, 1);
  });

  test('a remembered target is not used for another version of the file', async () => {
    const { name, moved } = await redirected({ status: 301 });
    await pageReads(moved, name, (await ufs.stat(moved)).version);
    const next = randomBytes(size);
    await origin.replace(name, next);
    const { version } = await ufs.stat(moved);
    const before = getsFor(moved, name);
    assert.equal(sha(await readAll(ufs.read(moved, version, 0, MiB))), sha(next.subarray(0, MiB)));
    assert.equal(getsFor(moved, name) - before, 2, 'the redirect is followed again for the new version');
  });

  test('a redirect to a scheme other than http(s) is SOURCE_ERROR naming the scheme, for stat and read', async () => {
    const name = `f${++files}.bin`;
    await origin.put(name, data);
    origin.behave({ redirect: { to: 'file:///etc/passwd', status: 301 } }, `to-file-${name}`);
    origin.behave({ redirect: { to: 'ftp://example.invalid/x.bin', status: 302 } }, `to-ftp-${name}`);
    const scheme = (s: string) => (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && err.message.includes(`redirects to a ${s} URL; fanout follows redirects to http and https only`);
    await assert.rejects(ufs.stat(`to-file-${name}`), scheme('file:'));
    await assert.rejects(readAll(ufs.read(`to-ftp-${name}`, 'v', 0, 10)), scheme('ftp:'));
  });

  test('a redirect loop is SOURCE_ERROR after 5 redirects, for stat and read', async () => {
    origin.behave({ redirect: { to: 'loop-b', status: 301 } }, 'loop-a');
    origin.behave({ redirect: { to: 'loop-a', status: 301 } }, 'loop-b');
    await assert.rejects(ufs.stat('loop-a'), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /more than 5 redirects/.test(err.message));
    await assert.rejects(readAll(ufs.read('loop-a', 'v', 0, 10)), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /more than 5 redirects/.test(err.message));
  });

  test('a file whose size neither HEAD nor a one-byte range tells is SOURCE_ERROR saying so (and naming a proxy\'s coding), not "answered HTTP 200"', async () => {
    const name = `f${++files}.bin`;
    await origin.put(name, data);
    origin.behave({ noLength: true }, name);
    await assert.rejects(
      ufs.stat(name),
      (err: { code?: string; message: string }) =>
        err.code === 'SOURCE_ERROR' && err.message.startsWith(`/web/${name}: the source gives no size: its HEAD answer has no Content-Length, and a request for its first byte`) && !/Content-Encoding/.test(err.message),
    );
    origin.behave({ noLength: true, compresses: 'ignoring-identity' }, name);
    await assert.rejects(ufs.stat(name), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /no Content-Length\. The answer came with Content-Encoding: gzip/.test(err.message));
  });

  test('a HEAD that says Content-Length: 0 of a file that has bytes is checked with a one-byte range: the file is read whole, not as empty', async () => {
    const name = `f${++files}.bin`;
    await origin.put(name, data);
    const empty = `empty${files}.bin`;
    await origin.put(empty, Buffer.alloc(0));
    origin.behave({ headSaysEmpty: true });
    const info = await ufs.stat(name);
    assert.equal(info.size, size);
    assert.equal(sha(await readAll(ufs.read(name, info.version, 0, size))), sha(data));
    // A file that is empty is still one.
    const none = await ufs.stat(empty);
    assert.equal(none.size, 0);
    assert.equal((await readAll(ufs.read(empty, none.version, 0, 0))).length, 0);
  });

  test('a source that never stat\'ed the file reads one stored compressed as stored, and refuses a proxy\'s compression with SOURCE_ERROR', async () => {
    const stored = `f${++files}.tar.gz`;
    await origin.put(stored, data);
    origin.behave({ storedCoding: 'gzip' }, stored);
    const version = (await ufs.stat(stored)).version;
    // Another source object: a page owner asked for a page by a peer has seen no stat of it.
    const owner = new HttpUfs(origin.url, { label: '/web' });
    try {
      assert.equal(sha(await readAll(owner.read(stored, version, MiB, MiB))), sha(data.subarray(MiB, 2 * MiB)));
      const compressed = `f${++files}.bin`;
      await origin.put(compressed, data);
      const plain = (await ufs.stat(compressed)).version;
      origin.behave({ compresses: 'ignoring-identity' }, compressed);
      await assert.rejects(
        readAll(owner.read(compressed, plain, 0, MiB)),
        (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /Content-Encoding: gzip although fanout asked for the file as stored/.test(err.message),
      );
    } finally {
      await owner.close();
    }
    await assert.rejects(readAll(ufs.read('missing.bin', 'v', 0, 1)), rejectsWith('NOT_FOUND'));
  });
});
