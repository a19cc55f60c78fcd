import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { get, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile, execFileSync } from 'node:child_process';
import { crc32 } from 'node:zlib';
import { WorkerProcess, TEST_ADMIN_TOKEN } from '../harness/workers.js';
import { Origin } from '../harness/origin.js';
import { waitFor } from '../harness/ports.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { CHECKSUM_HEADER } from '../../src/lib/cluster/index.js';
import { sendPath } from '../../src/lib/sendfile/index.js';

const MiB = 1024 * 1024;
/** Larger than what loopback's socket buffers hold (32 MiB receive + 4 MiB send here): a reader that stops holds the send. */
const PAGE = 64 * MiB;
const hex = (b: Buffer) => crc32(b).toString(16).padStart(8, '0');

/** Starts a worker over `origin` with FANOUT_NO_SENDFILE set or not (the child takes the env at spawn). */
async function startWorker(id: string, js: boolean, origin: Origin): Promise<WorkerProcess> {
  const before = process.env.FANOUT_NO_SENDFILE;
  if (js) process.env.FANOUT_NO_SENDFILE = '1';
  else delete process.env.FANOUT_NO_SENDFILE;
  try {
    return await WorkerProcess.start({ id, mounts: { web: origin.url }, pageSize: '64MiB', limits: { clientIdle: '20s' } });
  } finally {
    if (before === undefined) delete process.env.FANOUT_NO_SENDFILE;
    else process.env.FANOUT_NO_SENDFILE = before;
  }
}

interface PageAnswer {
  status: number;
  cache: string;
  body: Buffer;
  crc: string | undefined;
  error: string | undefined;
}

/**
 * A page response read whole (or, with `slow`, `step` bytes every `everyMs`), with its checksum and
 * error trailer, by a client that says it reads trailers (as fanout's page fetcher does).
 */
function readPage(url: string, slow?: { step: number; everyMs: number; onBytes?: (n: number) => void }): Promise<PageAnswer> {
  return new Promise((resolve, reject) => {
    const req = get(url, { headers: { te: 'trailers' } }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let got = 0;
      const take = (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        slow?.onBytes?.(got);
      };
      res.on('error', reject);
      res.on('end', () => {
        const crc = (res.headers[CHECKSUM_HEADER] as string | undefined) ?? (res.trailers[CHECKSUM_HEADER] as string | undefined);
        resolve({ status: res.statusCode!, cache: String(res.headers['x-fanout-cache']), body: Buffer.concat(chunks), crc, error: res.trailers['x-fanout-error'] as string | undefined });
      });
      if (!slow) return void res.on('data', take);
      res.pause();
      const timer = setInterval(() => {
        let taken = 0;
        let chunk: Buffer | null;
        while (taken < slow.step && (chunk = res.read() as Buffer | null) !== null) {
          take(chunk);
          taken += chunk.length;
        }
      }, slow.everyMs);
      res.once('end', () => clearInterval(timer));
      res.once('close', () => clearInterval(timer));
    });
    req.on('error', reject);
  });
}

/** `curl -sS -o FILE URL` (a client that reads no trailers): its exit status, the HTTP status and the bytes it wrote. */
function runCurl(url: string): Promise<{ status: number; http: number; bytes: number }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url], (err, stdout) => {
      const [http, bytes] = stdout.trim().split(' ').map(Number);
      resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, http: http ?? 0, bytes: bytes ?? 0 });
    });
  });
}

async function counters(worker: WorkerProcess, name: string, label?: string): Promise<number> {
  const text = await (await fetch(`${worker.url}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(name) && (label === undefined || l.includes(label)))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

const paths = sendPath() === 'sendfile' ? (['sendfile', 'js'] as const) : (['js'] as const);

for (const path of paths) {
  describe(`waiters of a cold page over a slow origin (${path} path)`, () => {
    let origin: Origin;
    let worker: WorkerProcess;
    let n = 0;
    const expectedPath = path === 'sendfile' ? 'kernel' : 'js';

    before(async () => {
      origin = await Origin.start();
      worker = await startWorker(`w-coldfollow-${path}`, path === 'js', origin);
    });
    after(async () => {
      if (process.env.DEBUG_LOG) console.error(await readFile(join(worker.dir, 'worker.log'), 'utf8').catch(() => ''));
      await worker?.destroy();
      await origin?.close();
    });

    /** A new file of one page at the origin, served at `bytesPerSecond`; its page URL on the worker. */
    async function coldPage(bytesPerSecond: number): Promise<{ data: Buffer; name: string; url: string; key: string }> {
      const data = randomBytes(PAGE);
      const name = `page${n++}.bin`;
      await origin.put(name, data);
      origin.behave({ bytesPerSecond }, name);
      const info = (await (await fetch(`${worker.url}/v1/stat/web/${name}`)).json()) as { version: string; size: number };
      const url = `${worker.url}/v1/page/web/${name}?v=${encodeURIComponent(info.version)}&size=${info.size}&i=0`;
      return { data, name, url, key: pageKey({ mount: 'web', path: name, version: info.version, size: info.size, index: 0 }, PAGE) };
    }

    test('eight waiters get the same bytes and checksum from one source read, each sent the way the worker chose at start', async () => {
      const { data, name, url } = await coldPage(32 * MiB);
      const before = await counters(worker, 'fanout_fill_sends_total', `path="${expectedPath}"`);
      const results = await Promise.all(Array.from({ length: 8 }, () => readPage(url)));
      for (const r of results) {
        assert.equal(r.status, 200);
        assert.equal(r.cache, 'miss', 'every waiter joined the fill');
        assert.ok(r.body.equals(data), 'every waiter gets the page bytes');
        assert.equal(r.crc, hex(data), 'with its checksum trailer');
      }
      assert.equal(origin.counters.byPath.get(name)?.bytes, PAGE, 'the origin sent the page once');
      assert.equal((await counters(worker, 'fanout_fill_sends_total', `path="${expectedPath}"`)) - before, 8, `all eight were sent on the ${expectedPath} path`);
      const again = await readPage(url);
      assert.equal(again.cache, 'hit', 'the fill was stored');
      assert.ok(again.body.equals(data));
    });

    test('a waiter that stops reading is cut after clientIdle; the others get the whole page and it is stored', async () => {
      const { data, url } = await coldPage(128 * MiB);
      // A raw client that sends its request and never reads: the kernel's buffers fill, then nothing moves.
      const target = new URL(url);
      const stalled = connect(Number(target.port), target.hostname);
      await new Promise((resolve) => stalled.once('connect', resolve));
      stalled.pause();
      let received = 0;
      stalled.on('data', (c: Buffer) => void (received += c.length));
      stalled.on('error', () => {});
      const closed = new Promise<void>((resolve) => stalled.once('close', () => resolve()));
      stalled.write(`GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n\r\n`);
      const others = await Promise.all(Array.from({ length: 7 }, () => readPage(url)));
      for (const r of others) {
        assert.ok(r.body.equals(data));
        assert.equal(r.crc, hex(data));
      }
      // The worker's side of the stalled connection leaves ESTABLISHED once it is cut.
      const established = () =>
        execFileSync('ss', ['-Htn', 'state', 'established', `( sport = :${target.port} and dport = :${stalled.localPort} )`], { encoding: 'utf8' }).trim() !== '';
      await waitFor('the worker to cut the stalled waiter', async () => !established(), 90_000);
      stalled.resume();
      await closed;
      assert.ok(received < PAGE, `the stalled waiter was not sent the whole page (${received} bytes)`);
      assert.equal((await readPage(url)).cache, 'hit');
      assert.equal((await fetch(`${worker.url}/healthz`)).status, 200);
    });

    test('a fill that fails mid-way ends every waiter with the source error trailer, and nothing is stored', async () => {
      const { data, name, url } = await coldPage(32 * MiB);
      origin.behave({ bytesPerSecond: 32 * MiB, resetAfter: 5 * MiB }, name);
      const results = await Promise.all(Array.from({ length: 4 }, () => readPage(url).catch((err: Error) => err)));
      for (const r of results) {
        // A waiter gets a short body with the error trailer (or, if the fill failed before its head, an error status).
        if (r instanceof Error) assert.fail(`the waiter's connection broke: ${r.message}`);
        if (r.status === 200) {
          assert.ok(r.error === 'SOURCE_ERROR' || r.error === 'SOURCE_TRUNCATED', `the body ends with the source error code (${r.error})`);
          assert.ok(r.body.length < PAGE);
          assert.ok(r.body.equals(data.subarray(0, r.body.length)), 'what came is the start of the page');
        } else assert.ok(r.status >= 500, `an error status (${r.status})`);
      }
      origin.behave({}, name);
      const again = await readPage(url);
      assert.equal(again.cache, 'miss', 'the broken page was not stored');
      assert.ok(again.body.equals(data));
      assert.equal(again.crc, hex(data));
    });

    test('a fill that fails mid-way cuts a client that reads no trailers (curl): its body never ends as if whole', async () => {
      const { data, name, url } = await coldPage(32 * MiB);
      origin.behave({ bytesPerSecond: 32 * MiB, resetAfter: 5 * MiB }, name);
      const curl = await runCurl(url);
      origin.behave({}, name);
      // Before: 200, curl exited 0 with the first 5 MiB as the page (the error only in a trailer).
      assert.ok(curl.status !== 0 || curl.http >= 500, `curl failed or got an error status (exit ${curl.status}, HTTP ${curl.http}, ${curl.bytes} bytes)`);
      if (curl.http === 200) assert.equal(curl.status, 18, 'curl: transfer closed with outstanding read data remaining');
      const again = await readPage(url);
      assert.equal(again.cache, 'miss', 'the broken page was not stored');
      assert.ok(again.body.equals(data));
      assert.equal(again.crc, hex(data));
    });

    // A follower's descriptor outlives the page's name. (On the JS path, a waiter that fell behind
    // a finished fill re-reads the stored page, and ends with an INTERNAL trailer if it was dropped.)
    test('a page dropped from the store while a slow waiter follows it: the waiter still gets every byte', { skip: path === 'js' }, async () => {
      const { data, url, key } = await coldPage(64 * MiB);
      let stored = false;
      let gotAtDrop = -1;
      const slow = readPage(url, {
        step: MiB,
        everyMs: 50,
        onBytes: (got) => void (stored && gotAtDrop < 0 && (gotAtDrop = got)),
      });
      const fast = await readPage(url);
      assert.ok(fast.body.equals(data));
      await waitFor('the page to be stored', async () => (await fetch(url, { method: 'HEAD' })).headers.get('x-fanout-cache') === 'hit', 10_000);
      const freed = (await (await fetch(`${worker.url}/v1/admin/free`, { method: 'POST', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ keys: [key] }) })).json()) as { freed: number };
      assert.equal(freed.freed, 1, 'the page was in the store and is dropped');
      stored = true;
      const s = await slow;
      assert.ok(gotAtDrop < PAGE, 'the slow waiter was still being sent the page when it was dropped');
      assert.equal(s.cache, 'miss');
      assert.ok(s.body.equals(data), 'the slow waiter gets every byte');
      assert.equal(s.crc, hex(data));
      assert.equal((await readPage(url)).cache, 'miss', 'the page is gone from the store');
    });
  });
}
