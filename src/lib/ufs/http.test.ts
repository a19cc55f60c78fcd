import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpUfs } from './http.js';
import { releaseSourceChunk } from './chunks.js';
import { readAll, rejectsWith, sha } from '../../../test/harness/streams.js';

const MiB = 1024 * 1024;

interface ServedFile {
  body: Buffer;
  mtime: Date;
  /** Full header value, e.g. '"abc"' or 'W/"abc"'; none when absent. As node:http writes it: latin1, a byte per character. */
  etag?: string;
  /** The ETag line sent twice. */
  etagTwice?: boolean;
  /** Server quirks the adapter must cope with. */
  noRanges?: boolean;
  noHead?: boolean;
  ignoreIfMatch?: boolean;
  /** The Content-Length a HEAD claims, whatever the body's. */
  headLength?: string;
  /** Sends the headers of a full range, then drops the connection halfway. */
  dropHalfway?: boolean;
}

describe('HttpUfs against a real HTTP server', () => {
  const files = new Map<string, ServedFile>();
  const big = randomBytes(3 * MiB + 5);
  let server: Server;
  let base: string;
  let ufs: HttpUfs;
  /** The same server read with size + Last-Modified versions for files without a strong ETag. */
  let weakUfs: HttpUfs;

  before(async () => {
    files.set('/files/big.bin', { body: big, mtime: new Date('2024-01-02T03:04:05Z'), etag: '"big-v1"' });
    files.set('/files/plain.txt', { body: Buffer.from('no etag here'), mtime: new Date('2024-02-01T00:00:00Z') });
    files.set('/files/weak.txt', { body: Buffer.from('weak'), mtime: new Date('2024-02-01T00:00:00Z'), etag: 'W/"w1"' });
    files.set('/files/nohead.txt', { body: Buffer.from('no HEAD'), mtime: new Date(0), etag: '"nh"', noHead: true });
    files.set('/files/noranges.txt', { body: Buffer.from('0123456789'), mtime: new Date(0), etag: '"nr"', noRanges: true });
    files.set('/files/drop.bin', { body: randomBytes(256 * 1024), mtime: new Date(0), etag: '"d"', dropHalfway: true });
    files.set('/files/with space & ü.txt', { body: Buffer.from('odd name'), mtime: new Date(0), etag: '"odd"' });
    // "vé1" in UTF-8 (the server writes a byte per character), and an ETag line sent twice.
    files.set('/files/utf8-etag.bin', { body: randomBytes(1000), mtime: new Date(0), etag: `"${Buffer.from('vé1').toString('latin1')}"` });
    files.set('/files/exabytes.bin', { body: randomBytes(10), mtime: new Date(0), etag: '"x"', headLength: '9007199254740993' });
    files.set('/files/etag-twice.bin', { body: randomBytes(1000), mtime: new Date(0), etag: '"t1"', etagTwice: true });
    server = createServer((req, res) => {
      const pathname = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
      if (pathname === '/files/dir') return void res.writeHead(301, { location: '/files/dir/' }).end();
      if (pathname.startsWith('/moved/')) {
        return void res.writeHead(302, { location: `/files/${encodeURIComponent(pathname.slice(7))}` }).end();
      }
      const f = files.get(pathname);
      if (!f) return void res.writeHead(404).end('not found');
      if (req.method === 'HEAD' && f.noHead) return void res.writeHead(405).end();
      const headers: Record<string, string | string[]> = { 'last-modified': f.mtime.toUTCString() };
      if (f.etag) headers.etag = f.etagTwice ? [f.etag, f.etag] : f.etag;
      const ifMatch = req.headers['if-match'];
      if (ifMatch && !f.ignoreIfMatch && ifMatch !== f.etag) return void res.writeHead(412, headers).end();
      const size = f.body.length;
      const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
      let start = 0;
      let end = size - 1;
      let status = 200;
      if (range && !f.noRanges) {
        start = Number(range[1]);
        end = Math.min(Number(range[2]), size - 1);
        if (start >= size) return void res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
        status = 206;
        headers['content-range'] = `bytes ${start}-${end}/${size}`;
      }
      headers['content-length'] = req.method === 'HEAD' && f.headLength ? f.headLength : String(end + 1 - start);
      res.writeHead(status, headers);
      if (req.method === 'HEAD') return void res.end();
      if (f.dropHalfway) {
        res.write(f.body.subarray(start, start + Math.floor((end + 1 - start) / 2)));
        return void setImmediate(() => res.socket?.destroy());
      }
      res.end(f.body.subarray(start, end + 1));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    ufs = new HttpUfs(`${base}/files`);
    weakUfs = new HttpUfs(`${base}/files`, { versioning: 'weak' });
  });

  after(async () => {
    await Promise.all([ufs.close(), weakUfs.close()]);
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  test('stat uses the strong ETag as version; without one, strict refuses and weak uses size-mtime', async () => {
    const info = await ufs.stat('big.bin');
    assert.deepEqual(info, { path: 'big.bin', size: big.length, mtimeMs: Date.parse('2024-01-02T03:04:05Z'), version: 'big-v1' });
    await assert.rejects(ufs.stat('plain.txt'), rejectsWith('SOURCE_UNVERSIONED'));
    await assert.rejects(ufs.stat('weak.txt'), rejectsWith('SOURCE_UNVERSIONED'));
    const plain = await weakUfs.stat('plain.txt');
    assert.equal(plain.version, `12-${Date.parse('2024-02-01T00:00:00Z')}`);
    assert.equal((await weakUfs.stat('weak.txt')).version, `4-${Date.parse('2024-02-01T00:00:00Z')}`);
    assert.equal((await ufs.stat('nohead.txt')).size, 7);
    assert.equal((await ufs.stat('with space & ü.txt')).version, 'odd');
    assert.equal((await new HttpUfs(`${base}/moved/`).stat('big.bin')).version, 'big-v1');
  });

  test('a non-ASCII ETag and one sent twice are one version for stat and read alike', async () => {
    for (const [name, version] of [
      ['utf8-etag.bin', 'vé1'],
      ['etag-twice.bin', 't1'],
    ] as const) {
      const info = await ufs.stat(name);
      assert.equal(info.version, version, name);
      const body = files.get(`/files/${name}`)!.body;
      assert.equal(sha(await readAll(ufs.read(name, info.version, 0, body.length))), sha(body), name);
    }
  });

  test('stat and list errors', async () => {
    await assert.rejects(ufs.stat('missing'), rejectsWith('NOT_FOUND'));
    await assert.rejects(ufs.stat('dir'), rejectsWith('IS_A_DIRECTORY'));
    await assert.rejects(ufs.stat(''), rejectsWith('IS_A_DIRECTORY'));
    await assert.rejects(ufs.stat('../x'), rejectsWith('INVALID_PATH'));
    await assert.rejects(ufs.list(''), rejectsWith('NOT_LISTABLE'));
    await assert.rejects(new HttpUfs('http://127.0.0.1:1/').stat('x'), rejectsWith('SOURCE_ERROR'));
  });

  test('read returns exactly the bytes of each range', async () => {
    for (const [offset, length] of [
      [0, big.length],
      [0, 1],
      [big.length - 1, 1],
      [MiB - 3, MiB + 7],
      [5, 0],
    ] as const) {
      const got = await readAll(ufs.read('big.bin', 'big-v1', offset, length));
      assert.equal(sha(got), sha(big.subarray(offset, offset + length)), `[${offset}, +${length})`);
    }
    const plain = await weakUfs.stat('plain.txt');
    assert.equal((await readAll(weakUfs.read('plain.txt', plain.version, 3, 4))).toString(), 'etag');
    await assert.rejects(readAll(ufs.read('plain.txt', plain.version, 3, 4)), rejectsWith('SOURCE_UNVERSIONED'));
    assert.equal((await readAll(ufs.read('with space & ü.txt', 'odd', 4, 4))).toString(), 'name');
    // A server without range support is fine for a whole-file read and an error otherwise.
    assert.equal((await readAll(ufs.read('noranges.txt', 'nr', 0, 10))).toString(), '0123456789');
    await assert.rejects(readAll(ufs.read('noranges.txt', 'nr', 2, 3)), rejectsWith('SOURCE_ERROR'));
  });

  test('a range read through a redirect gets the bytes of the target', async () => {
    const moved = new HttpUfs(`${base}/moved/`);
    try {
      const got = await readAll(moved.read('big.bin', 'big-v1', MiB, MiB));
      assert.equal(sha(got), sha(big.subarray(MiB, 2 * MiB)));
    } finally {
      await moved.close();
    }
  });

  test('chunks given back once copied are read into again, and no read sees another one\'s bytes', async () => {
    // Reads at once, each copying and releasing every chunk as a fill does: the slabs go round
    // between them, so a chunk released too early or lent twice would show as wrong bytes.
    const reads = [0, 1, 2, 1, 0, 2].map(async (part) => {
      const offset = part * (MiB - 1);
      const into = Buffer.alloc(MiB);
      let at = 0;
      for await (const chunk of ufs.read('big.bin', 'big-v1', offset, MiB) as AsyncIterable<Buffer>) {
        chunk.copy(into, at);
        at += chunk.length;
        releaseSourceChunk(chunk);
      }
      assert.equal(at, MiB);
      assert.equal(sha(into), sha(big.subarray(offset, offset + MiB)), `part ${part}`);
    });
    await Promise.all(reads);
  });

  test('a size past 2^53 (not a whole number in JavaScript) is SOURCE_ERROR at stat, not a size rounded to another', async () => {
    await assert.rejects(ufs.stat('exabytes.bin'), (err: { code?: string; message: string }) => err.code === 'SOURCE_ERROR' && /9007199254740993 bytes/.test(err.message));
  });

  test('read refuses bad ranges and broken responses', async () => {
    await assert.rejects(readAll(ufs.read('big.bin', 'big-v1', big.length - 2, 10)), rejectsWith('SOURCE_TRUNCATED'));
    await assert.rejects(readAll(ufs.read('big.bin', 'big-v1', big.length, 1)), rejectsWith('RANGE_NOT_SATISFIABLE'));
    await assert.rejects(readAll(ufs.read('missing', 'x', 0, 1)), rejectsWith('NOT_FOUND'));
    // The server closed the connection after half the body: a cut, not a fault of the worker.
    await assert.rejects(readAll(ufs.read('drop.bin', 'd', 0, 256 * 1024)), rejectsWith('SOURCE_TRUNCATED'));
  });

  test('a changed file is SOURCE_CHANGED, with or without server If-Match support', async () => {
    files.set('/files/changing.txt', { body: Buffer.from('one'), mtime: new Date(1_000_000), etag: '"c1"' });
    const old = await ufs.stat('changing.txt');
    files.set('/files/changing.txt', { body: Buffer.from('two'), mtime: new Date(2_000_000), etag: '"c2"' });
    await assert.rejects(readAll(ufs.read('changing.txt', old.version, 0, 3)), rejectsWith('SOURCE_CHANGED'));
    await assert.rejects(readAll(ufs.read('changing.txt', old.version, 0, 0)), rejectsWith('SOURCE_CHANGED'));
    files.get('/files/changing.txt')!.ignoreIfMatch = true;
    await assert.rejects(readAll(ufs.read('changing.txt', old.version, 0, 3)), rejectsWith('SOURCE_CHANGED'));
    assert.equal((await readAll(ufs.read('changing.txt', 'c2', 0, 3))).toString(), 'two');

    files.set('/files/no-etag.txt', { body: Buffer.from('one'), mtime: new Date(1_000_000) });
    const before = await weakUfs.stat('no-etag.txt');
    files.set('/files/no-etag.txt', { body: Buffer.from('two'), mtime: new Date(2_000_000) });
    await assert.rejects(readAll(weakUfs.read('no-etag.txt', before.version, 0, 3)), rejectsWith('SOURCE_CHANGED'));
  });

  test('an aborted read errors with ABORTED', async () => {
    const ac = new AbortController();
    const stream = ufs.read('big.bin', 'big-v1', 0, big.length, ac.signal);
    await assert.rejects(
      (async () => {
        for await (const _chunk of stream) ac.abort();
      })(),
      rejectsWith('ABORTED'),
    );
    await assert.rejects(ufs.stat('big.bin', AbortSignal.abort()), rejectsWith('ABORTED'));
  });
});
