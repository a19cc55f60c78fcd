import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { crc32 } from 'node:zlib';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Member } from '../../src/core/types.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { HEADERS } from '../../src/lib/wire/protocol.js';
import type { WorkerProcess } from '../harness/workers.js';
import { workerBesideFakePeer } from './helpers.js';

const MiB = 1024 * 1024;
const PAGES = 16;

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * How the fake member answers page requests:
 * - cut: the head of a whole page (length, a checksum), a quarter of the page in wrong bytes, then
 *   the connection closed;
 * - trailer: a whole page of wrong bytes streamed, then an error trailer saying it is unavailable;
 * - down: 503 with an HTML body (a proxy in front of a stopped worker);
 * - html404, redirect: what a server that is not a fanout worker answers (no fanout error code);
 * - badsum: the page's right bytes under a checksum header that is not theirs;
 * - corrupt: a whole page of wrong bytes under the right page's checksum (bits flipped on the way).
 */
type Mode = 'cut' | 'trailer' | 'down' | 'html404' | 'redirect' | 'badsum' | 'corrupt';

/**
 * A cluster member that misbehaves: one real worker (w1) and a fake one (w2) that owns about half
 * of every file's pages. Whatever w2 sends before failing, a read through w1 gives the file's
 * bytes or fails, and never leaves w2's bytes in a page that w1 keeps; an answer that is not a
 * fanout worker's is read around.
 */
describe('a member that misbehaves', () => {
  let source: string;
  let worker: WorkerProcess;
  let fake: Server;
  let mode: Mode = 'down';
  const files = new Map<string, Buffer>();

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-peer-faults-'));
    for (const name of ['cut.bin', 'trailer.bin', 'html404.bin', 'redirect.bin', 'badsum.bin', 'corrupt.bin']) {
      const data = randomBytes(PAGES * MiB);
      files.set(name, data);
      await writeFile(join(source, name), data);
    }
    fake = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://fake');
      if (url.pathname === '/healthz') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      if (!url.pathname.startsWith('/v1/page/')) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"NOT_FOUND","message":"fake"}}');
      const index = Number(url.searchParams.get('i'));
      const length = Math.min(MiB, Number(url.searchParams.get('size')) - index * MiB);
      const wrong = Buffer.alloc(length, 0x41);
      const right = files.get(url.pathname.split('/').pop()!)?.subarray(index * MiB, index * MiB + length);
      if ((mode === 'badsum' || mode === 'corrupt') && right) {
        const rightSum = (crc32(right) >>> 0).toString(16).padStart(8, '0');
        res.writeHead(200, { 'content-length': length, [HEADERS.checksum]: mode === 'badsum' ? (rightSum === '00000000' ? '00000001' : '00000000') : rightSum });
        return void res.end(mode === 'badsum' ? right : wrong);
      }
      if (mode === 'down') return void res.writeHead(503, { 'content-type': 'text/html' }).end('<html>down</html>');
      if (mode === 'html404') return void res.writeHead(404, { 'content-type': 'text/html' }).end('<html>no such page</html>');
      if (mode === 'redirect') return void res.writeHead(302, { location: 'https://fake/' }).end();
      if (mode === 'cut') {
        res.writeHead(200, { 'content-length': length, [HEADERS.checksum]: '00000000' });
        res.write(wrong.subarray(0, length / 4), () => res.socket?.end());
        return;
      }
      res.writeHead(200, { 'transfer-encoding': 'chunked', trailer: `${HEADERS.error}, ${HEADERS.errorMessage}` });
      res.write(wrong);
      res.addTrailers({ [HEADERS.error]: 'WORKER_UNAVAILABLE', [HEADERS.errorMessage]: 'fake%20peer' });
      res.end();
    });
    worker = await workerBesideFakePeer(fake, source, { peerFirstByte: '2s', peerIdle: '2s' });
  });

  after(async () => {
    await worker?.destroy();
    fake?.closeAllConnections();
    await new Promise((resolve) => fake?.close(resolve));
    await rm(source, { recursive: true, force: true });
  });

  /** The file through w1's /v1/data: its bytes, or undefined if the answer failed or was cut. */
  async function readThroughWorker(name: string): Promise<Buffer | undefined> {
    try {
      const response = await fetch(`${worker.url}/v1/data/data/${name}`);
      if (response.status !== 200) return undefined;
      return Buffer.from(await response.arrayBuffer());
    } catch {
      return undefined;
    }
  }

  async function pagesOwnedByFake(name: string): Promise<number> {
    const stat = (await (await fetch(`${worker.url}/v1/stat/data/${name}`)).json()) as { version: string; size: number };
    const { members } = (await (await fetch(`${worker.url}/v1/cluster`)).json()) as { members: Member[] };
    assert.equal(members.length, 2);
    const ring = new HashRing(members);
    let owned = 0;
    for (let index = 0; index < PAGES; index++) {
      if (ring.owners(pageKey({ mount: 'data', path: name, version: stat.version, size: stat.size, index }, MiB), 1)[0]!.id === 'w2') owned++;
    }
    return owned;
  }

  for (const [name, otherServer] of [
    ['html404.bin', 'html404'],
    ['redirect.bin', 'redirect'],
  ] as const) {
    test(`${otherServer}: a member answering as no fanout worker does is read around, and the read gives the file`, async () => {
      assert.ok((await pagesOwnedByFake(name)) > 0, 'the fake member owns pages of the file');
      mode = otherServer;
      const read = await readThroughWorker(name);
      mode = 'down';
      assert.ok(read !== undefined, 'the read did not fail');
      assert.equal(sha256(read), sha256(files.get(name)!));
    });
  }

  for (const [name, badMode] of [
    ['cut.bin', 'cut'],
    ['trailer.bin', 'trailer'],
  ] as const) {
    test(`${badMode}: the read gives the file or fails, and the next read gives the file`, async () => {
      assert.ok((await pagesOwnedByFake(name)) > 0, 'the fake member owns pages of the file');
      mode = badMode;
      const first = await readThroughWorker(name);
      if (first !== undefined) assert.equal(sha256(first), sha256(files.get(name)!), 'a whole answer is the file');
      mode = 'down';
      const second = await readThroughWorker(name);
      assert.ok(second !== undefined, 'with the fake member down, pages come from the source');
      assert.equal(sha256(second), sha256(files.get(name)!), 'no page kept from the first read holds the fake member\'s bytes');
    });
  }

  // Last: the fake member stays skipped by w1's relays for 30 s after these.
  test('badsum: a page whose checksum header is not its bytes\' is read from the source, checked against the owner\'s bytes', async () => {
    assert.ok((await pagesOwnedByFake('badsum.bin')) > 0, 'the fake member owns pages of the file');
    mode = 'badsum';
    const read = await readThroughWorker('badsum.bin');
    mode = 'down';
    assert.ok(read !== undefined, 'the read did not fail (before: 502 CHECKSUM_MISMATCH at every read, the source never read)');
    assert.equal(sha256(read), sha256(files.get('badsum.bin')!));
  });

  test('corrupt: a member that keeps sending wrong bytes is skipped by the relays, and the next read gives the file', async () => {
    assert.ok((await pagesOwnedByFake('corrupt.bin')) > 0, 'the fake member owns pages of the file');
    mode = 'corrupt';
    try {
      const first = await readThroughWorker('corrupt.bin');
      if (first !== undefined) assert.equal(sha256(first), sha256(files.get('corrupt.bin')!), 'a whole answer is the file');
      const second = await readThroughWorker('corrupt.bin');
      assert.ok(second !== undefined, 'the second read, the member still sending wrong bytes, did not fail');
      assert.equal(sha256(second), sha256(files.get('corrupt.bin')!));
    } finally {
      mode = 'down';
    }
  });
});
