import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { crc32 } from 'node:zlib';
import { FanoutError } from '../../core/errors.js';
import type { Member, PageRef } from '../../core/types.js';
import { WINDOW_PROGRESS_BYTES } from '../leanhttp/index.js';
import { CHECKSUM_HEADER, ERROR_TRAILER, PageFetcher, errorTrailers } from './pagefetcher.js';

const PAGE = Buffer.from('0123456789abcdef');
const ref: PageRef = { mount: 'm', path: 'f.bin', version: 'v1', size: PAGE.length, index: 0 };

/** A worker stand-in whose answer is chosen by the test, over real HTTP on loopback; both transports, same behaviour. */
for (const transport of ['socket', 'undici'] as const) {
  describe(`page fetches from a misbehaving worker (${transport} transport)`, () => {
    let server: Server;
    let member: Member;
    let behave: (req: IncomingMessage, res: ServerResponse) => void = () => {};
    const open = new Set<ServerResponse>();

    before(async () => {
      server = createServer((req, res) => {
        open.add(res);
        res.once('close', () => open.delete(res));
        behave(req, res);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      member = { id: 'w9', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, capacity: 1 };
    });

    after(async () => {
      for (const res of open) res.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });

    // Short deadlines only where a test waits for one to pass; elsewhere long ones, so a loaded
    // machine (CI, 2 cores) cannot turn a slow answer into a deadline failure.
    const fetcher = (deadlineMs = 30_000) =>
      new PageFetcher({ transport, timeouts: { connectMs: 30_000, firstByteMs: deadlineMs, idleMs: deadlineMs } });
    const impatientFetcher = () => fetcher(300);

    test('a whole page with its checksum trailer is returned', async () => {
      behave = (_req, res) => {
        res.writeHead(200, { trailer: CHECKSUM_HEADER });
        res.write(PAGE.subarray(0, 5));
        res.addTrailers({ [CHECKSUM_HEADER]: crc32(PAGE).toString(16) });
        res.end(PAGE.subarray(5));
      };
      const f = fetcher();
      assert.deepEqual(Buffer.concat(await f.fetch(member, ref, PAGE.length)), PAGE);
      await f.close();
    });

    test('a worker that never answers fails the fetch as WORKER_UNAVAILABLE naming it and the first-byte deadline', async () => {
      behave = () => {}; // headers never come, as from a SIGSTOPped process
      const f = impatientFetcher();
      await assert.rejects(f.fetch(member, ref, PAGE.length), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE' && /w9/.test(e.message) && /first-byte/.test(e.message));
      await f.close();
    });

    test('a worker that answers only 102 Processing, every 50 ms, fails the fetch after fillingMs as WORKER_UNAVAILABLE naming the filling timeout', async () => {
      behave = (_req, res) => {
        res.writeProcessing();
        const timer = setInterval(() => res.writableEnded || res.destroyed || res.writeProcessing(), 50);
        res.once('close', () => clearInterval(timer));
      };
      const f = new PageFetcher({ transport, timeouts: { connectMs: 30_000, firstByteMs: 300, idleMs: 300, fillingMs: 800 } });
      let fillings = 0;
      const started = Date.now();
      await assert.rejects(
        f.fetch(member, ref, PAGE.length, { onProgress: (what) => void (what === 'filling' && fillings++) }),
        (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE' && /w9/.test(e.message) && /102 Processing/.test(e.message) && /800 ms/.test(e.message),
      );
      const took = Date.now() - started;
      // Before: each 102 restarted the first-byte deadline for 10 min (socket), for ever (undici),
      // past the test's timeout. The message above names the filling deadline; no upper bound
      // on time here, which a loaded machine could cross.
      assert.ok(took >= 700, `given up at fillingMs, not before (${took} ms)`);
      assert.ok(fillings > 3, 'the 102s were seen as progress meanwhile');
      await f.close();
    });

    test('a body that stalls fails the fetch on the idle deadline', async () => {
      behave = (_req, res) => {
        res.writeHead(200, { trailer: CHECKSUM_HEADER });
        res.write(PAGE.subarray(0, 5));
      };
      const f = impatientFetcher();
      await assert.rejects(f.fetch(member, ref, PAGE.length), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE' && /idle/.test(e.message));
      await f.close();
    });

    test('a worker that trickles its body (a byte every 20 ms) fails the fetch once an idle window brings too little', async () => {
      const page = Buffer.alloc(200, 'p');
      let timer: NodeJS.Timeout | undefined;
      behave = (_req, res) => {
        res.writeHead(200, { 'content-length': page.length, [CHECKSUM_HEADER]: crc32(page).toString(16) });
        let sent = 0;
        // 4 s for the whole page: without the window's floor every byte restarts the deadline.
        timer = setInterval(() => (sent < page.length ? res.write(page.subarray(sent, ++sent)) : res.end()), 20);
      };
      const f = impatientFetcher();
      try {
        await assert.rejects(f.fetch(member, { ...ref, size: page.length }, page.length), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE' && /w9/.test(e.message) && /less than 32 KiB in 300 ms/.test(e.message));
      } finally {
        clearInterval(timer);
        await f.close();
      }
    });

    test('a body moving above the floor is not cut, nor one its reader holds for windows on end', async () => {
      const piece = Buffer.alloc(WINDOW_PROGRESS_BYTES, 'y');
      const pieces = 12;
      const slow = Buffer.concat(Array.from({ length: pieces }, () => piece));
      let timer: NodeJS.Timeout | undefined;
      behave = (_req, res) => {
        res.writeHead(200, { 'content-length': slow.length, [CHECKSUM_HEADER]: crc32(slow).toString(16) });
        let sent = 0;
        // A floor's worth every 100 ms of a 300 ms window: 1.2 s in all, four windows.
        timer = setInterval(() => (sent < pieces ? res.write(piece, () => ++sent === pieces && res.end()) : clearInterval(timer)), 100);
      };
      const f = impatientFetcher();
      try {
        assert.equal(Buffer.concat(await f.fetch(member, { ...ref, size: slow.length }, slow.length)).length, slow.length);
        // 4 MiB sent at once; the reader takes nothing for four windows, then all of it.
        const big = Buffer.alloc(4 * 1024 * 1024, 'z');
        behave = (_req, res) => res.writeHead(200, { 'content-length': big.length, [CHECKSUM_HEADER]: crc32(big).toString(16) }).end(big);
        const body = await f.stream(member, { ...ref, size: big.length }, big.length);
        await new Promise((resolve) => setTimeout(resolve, 4 * 300));
        let length = 0;
        for await (const chunk of body) length += chunk.length;
        assert.equal(length, big.length);
      } finally {
        clearInterval(timer);
        await f.close();
      }
    });

    test('a source failure after the first bytes arrives as its own code (error trailer), not as a dead worker', async () => {
      behave = (_req, res) => {
        res.writeHead(200, { trailer: `${CHECKSUM_HEADER}, ${ERROR_TRAILER}` });
        res.write(PAGE.subarray(0, 5));
        res.addTrailers(errorTrailers('SOURCE_TRUNCATED', 'source ended after 5 of 16 bytes: /m/f.bin'));
        res.end();
      };
      const f = fetcher();
      await assert.rejects(f.fetch(member, ref, PAGE.length), (e: FanoutError) => e.code === 'SOURCE_TRUNCATED' && e.message === 'source ended after 5 of 16 bytes: /m/f.bin');
      await f.close();
    });

    test('a cut connection without an error trailer is a worker failure', async () => {
      behave = (_req, res) => {
        res.writeHead(200, { trailer: CHECKSUM_HEADER });
        res.write(PAGE.subarray(0, 5), () => res.destroy());
      };
      const f = fetcher();
      await assert.rejects(f.fetch(member, ref, PAGE.length), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE');
      await f.close();
    });

    test("the worker's JSON error codes survive the wire", async () => {
      for (const [code, status] of [['SOURCE_ERROR', 502], ['SOURCE_UNVERSIONED', 409], ['NOT_FOUND', 404], ['OVERLOADED', 503], ['SOURCE_CHANGED', 412]] as const) {
        behave = (_req, res) => {
          const text = JSON.stringify({ error: { code, message: `${code} at /m/f.bin` } });
          res.writeHead(status, { 'content-type': 'application/json', 'x-fanout-error': code });
          res.end(text);
        };
        const f = fetcher();
        await assert.rejects(f.fetch(member, ref, PAGE.length), (e: FanoutError) => e.code === code && e.message === `${code} at /m/f.bin`);
        await f.close();
      }
    });

    test('a non-JSON 5xx (a proxy in between) is a worker failure; a worker giving up (499) too', async () => {
      behave = (_req, res) => {
        res.writeHead(502, { 'content-type': 'text/html' });
        res.end('<html>bad gateway</html>');
      };
      const f = fetcher();
      await assert.rejects(f.fetch(member, ref, PAGE.length), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE' && /w9/.test(e.message));
      behave = (_req, res) => {
        res.writeHead(499, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'ABORTED', message: 'worker stopping' } }));
      };
      await assert.rejects(f.fetch(member, ref, PAGE.length), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE');
      await f.close();
    });

    test('a body with a wrong checksum is CHECKSUM_MISMATCH; an aborted fetch is ABORTED with the caller\'s reason kept', async () => {
      behave = (_req, res) => {
        res.writeHead(200, { 'content-length': PAGE.length, [CHECKSUM_HEADER]: 'deadbeef' });
        res.end(PAGE);
      };
      const f = fetcher();
      await assert.rejects(f.fetch(member, ref, PAGE.length), (e: FanoutError) => e.code === 'CHECKSUM_MISMATCH');
      behave = () => {};
      const controller = new AbortController();
      const pending = f.fetch(member, ref, PAGE.length, { signal: controller.signal });
      setTimeout(() => controller.abort(), 20);
      await assert.rejects(pending, (e: FanoutError) => e.code === 'ABORTED');
      const hedged = new AbortController();
      const lost = f.fetch(member, ref, PAGE.length, { signal: hedged.signal });
      setTimeout(() => hedged.abort(new FanoutError('ABORTED', 'another request won')), 20);
      await assert.rejects(lost, (e: FanoutError) => e.code === 'ABORTED' && e.message === 'another request won');
      await f.close();
    });
  });
}
