import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Origin } from '../harness/origin.js';
import { freePort, waitFor } from '../harness/ports.js';
import { peakRss, rssOf, StalledReaders } from '../harness/slowclients.js';
import { WorkerProcess } from '../harness/workers.js';
import { getOnNewConnection } from './helpers.js';

const MiB = 1024 * 1024;
const PAGE = 4 * MiB;
/** Far above what bounded responses need (≈ baseline + 256 MiB of response pages), far below the 2 GB seen unbounded. */
const RSS_BOUND = 400 * MiB;

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function stat(worker: WorkerProcess, path: string): Promise<{ version: string; size: number }> {
  const res = await fetch(`${worker.url}/v1/stat${path}`);
  assert.equal(res.status, 200);
  return (await res.json()) as { version: string; size: number };
}

async function readAll(url: string, init?: RequestInit): Promise<{ status: number; body: Buffer; code: string | null }> {
  const res = await fetch(url, init);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), code: res.headers.get('x-fanout-error') };
}

describe('bounded resources: slow clients', () => {
  let dir: string;
  let worker: WorkerProcess;
  const data = randomBytes(16 * PAGE);
  let info: { version: string; size: number };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-slow-'));
    await writeFile(join(dir, 'big.bin'), data);
    worker = await WorkerProcess.start({ id: 'w-slow', mounts: { data: dir } });
    info = await stat(worker, '/data/big.bin');
    const warm = await readAll(`${worker.url}/v1/data/data/big.bin`);
    assert.equal(sha256(warm.body), sha256(data));
  });
  after(async () => {
    await worker.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  test('50 readers of /v1/data that stop reading keep the worker memory bounded, and another client reads', async () => {
    const before = await rssOf(worker.pid!);
    const readers = await StalledReaders.open(worker.url, Array.from({ length: 50 }, () => '/v1/data/data/big.bin'));
    try {
      assert.equal(readers.started, 50);
      const other = await readAll(`${worker.url}/v1/data/data/big.bin`);
      assert.equal(other.status, 200);
      assert.equal(sha256(other.body), sha256(data));
      const peak = await peakRss(worker.pid!);
      console.log(`# /v1/data, 50 stalled readers: worker RSS ${(before / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)} MiB with them`);
      assert.ok(peak < RSS_BOUND, `worker RSS ${peak} bytes with 50 stalled readers`);
    } finally {
      readers.close();
    }
    assert.equal((await fetch(`${worker.url}/healthz`)).status, 200);
  });

  test('50 S3 GetObject readers that stop reading keep the worker memory bounded, and another client reads', async () => {
    const port = await freePort();
    const gw = await WorkerProcess.start({ id: 'w-gw', mounts: { data: dir }, gateway: { listen: `127.0.0.1:${port}`, anonymous: true } });
    const s3 = `http://127.0.0.1:${port}`;
    try {
      await waitFor('the gateway to answer', async () => (await fetch(`${s3}/data/big.bin`, { method: 'HEAD' })).status === 200);
      const warm = await readAll(`${s3}/data/big.bin`);
      assert.equal(sha256(warm.body), sha256(data));
      const readers = await StalledReaders.open(s3, Array.from({ length: 50 }, () => '/data/big.bin'));
      try {
        const other = await readAll(`${s3}/data/big.bin`);
        assert.equal(sha256(other.body), sha256(data));
        const peak = await peakRss(gw.pid!);
        console.log(`# S3 GetObject, 50 stalled readers: worker RSS peak ${(peak / MiB).toFixed(0)} MiB`);
        assert.ok(peak < RSS_BOUND, `worker RSS ${peak} bytes with 50 stalled S3 readers`);
      } finally {
        readers.close();
      }
    } finally {
      await gw.destroy();
    }
  });

  test('50 readers of /v1/page that stop reading keep the worker memory bounded, and other page hits complete', async () => {
    // A worker of its own: what the /v1/data scenario left in this one's heap is not this scenario's.
    const worker = await WorkerProcess.start({ id: 'w-slow-pages', mounts: { data: dir } });
    const warm = await readAll(`${worker.url}/v1/data/data/big.bin`);
    assert.equal(sha256(warm.body), sha256(data));
    const page = (i: number) => `/v1/page/data/big.bin?v=${encodeURIComponent(info.version)}&size=${info.size}&i=${i}`;
    const readers = await StalledReaders.open(worker.url, Array.from({ length: 50 }, (_, i) => page(i % 16)));
    try {
      for (let i = 0; i < 16; i++) {
        const res = await readAll(`${worker.url}${page(i)}`);
        assert.equal(res.status, 200);
        assert.ok(res.body.equals(data.subarray(i * PAGE, (i + 1) * PAGE)), `page ${i}`);
      }
      const peak = await peakRss(worker.pid!);
      console.log(`# /v1/page, 50 stalled readers: worker RSS peak ${(peak / MiB).toFixed(0)} MiB`);
      assert.ok(peak < RSS_BOUND, `worker RSS ${peak} bytes with 50 stalled page readers`);
    } finally {
      readers.close();
      await worker.destroy();
    }
  });
});

/**
 * A POST /v1/pages batch on a connection of its own that takes the response's first bytes, then
 * reads nothing more. Resolves with the status line's code once the answer has begun (0: none in 30 s).
 */
function stalledBatch(base: string, body: string): Promise<{ status: number; socket: import('node:net').Socket }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port) }, () => {
      socket.write(`POST /v1/pages HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    socket.once('error', reject);
    // An answer that never begins (the batch queued behind others for good) shows as status 0.
    const never = setTimeout(() => resolve({ status: 0, socket }), 30_000);
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(never);
      socket.pause(); // from here on, the client takes nothing
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(chunk.toString('latin1'))?.[1]), socket });
    });
  });
}

describe('bounded resources: batch answers whose clients stop reading', () => {
  const PAGE_1M = MiB;
  const data = randomBytes(16 * PAGE_1M);
  let dir: string;
  let worker: WorkerProcess;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-stalled-batches-'));
    await writeFile(join(dir, 'pages.bin'), data);
    await writeFile(join(dir, 'small.txt'), 'small\n');
    // 16 response slots, so 8 batch slots; clients are not cut for 10 minutes: what a stalled
    // batch holds, it holds for the whole test.
    worker = await WorkerProcess.start({ id: 'w-batches', mounts: { data: dir }, pageSize: '1MiB', limits: { responseMemory: '16MiB', clientIdle: '10m' } });
    assert.equal(sha256((await readAll(`${worker.url}/v1/data/data/pages.bin`)).body), sha256(data));
  });
  after(async () => {
    await worker.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  test('batches that stop reading take at most half the response slots: page and range reads go on, further batches get 503 OVERLOADED unread', async () => {
    const info = await stat(worker, '/data/pages.bin');
    // 16 MiB of warm pages per batch: more than loopback's socket buffers take, so each one stalls.
    const items = Array.from({ length: 16 }, (_, i) => ({ mount: 'data', path: 'pages.bin', version: info.version, size: info.size, index: i }));
    const body = JSON.stringify({ items, pageSize: PAGE_1M });
    const batches = await Promise.all(Array.from({ length: 24 }, () => stalledBatch(worker.url, body)));
    try {
      const admitted = batches.filter((b) => b.status === 200).length;
      const refused = batches.filter((b) => b.status === 503).length;
      assert.equal(admitted + refused, batches.length, `statuses: ${batches.map((b) => b.status).join(',')}`);
      assert.ok(admitted <= 8, `${admitted} batch answers at once with 8 batch slots`);
      assert.ok(refused >= 16, `${refused} refused`);
      // Before, 16 stalled batches held all 16 slots until clientIdle, and these waited behind them.
      const page = (i: number) => `${worker.url}/v1/page/data/pages.bin?v=${encodeURIComponent(info.version)}&size=${info.size}&i=${i}`;
      for (const i of [0, 7, 15]) {
        const res = await readAll(page(i), { signal: AbortSignal.timeout(60_000) });
        assert.equal(res.status, 200);
        assert.ok(res.body.equals(data.subarray(i * PAGE_1M, (i + 1) * PAGE_1M)), `page ${i}`);
      }
      const small = await readAll(`${worker.url}/v1/data/data/small.txt`, { signal: AbortSignal.timeout(60_000) });
      assert.equal(small.body.toString(), 'small\n');
      const another = await readAll(`${worker.url}/v1/pages`, { method: 'POST', body, headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(60_000) });
      assert.equal(another.status, 503);
      assert.equal(another.code, 'OVERLOADED');
    } finally {
      for (const b of batches) b.socket.destroy();
    }
    // Once those clients are gone a batch is answered again.
    await waitFor('a batch answered once the stalled clients left', async () => (await readAll(`${worker.url}/v1/pages`, { method: 'POST', body, headers: { 'content-type': 'application/json' } })).status === 200);
  });
});

describe('bounded resources: deadlines and caps', () => {
  let dir: string;
  const data = randomBytes(8 * PAGE);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-caps-'));
    await writeFile(join(dir, 'f.bin'), data);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('a client that stops reading is cut after clientIdle and the worker keeps serving', async () => {
    const worker = await WorkerProcess.start({ id: 'w-idle', mounts: { data: dir }, limits: { clientIdle: '1s' } });
    try {
      const readers = await StalledReaders.open(worker.url, ['/v1/data/data/f.bin']);
      // The client reads nothing, so it cannot see the cut yet: the worker counts it.
      await waitFor('the worker to cut the stalled reader', async () => ((await worker.metrics()).fanout_request_errors_total ?? 0) >= 1);
      const received = await readers.drain();
      assert.ok(received[0]! < data.length, `the stalled reader got ${received[0]} of ${data.length} bytes: cut, not served whole`);
      // The worker keeps serving: a reader that reads gets the whole file. With clientIdle at 1 s,
      // a test process starved for a second on a loaded machine is itself a stalled reader and is
      // cut as designed (undici: "terminated"); that is retried, any other failure is not.
      let res: Awaited<ReturnType<typeof readAll>> | undefined;
      for (let attempt = 1; !res; attempt++) {
        try {
          res = await readAll(`${worker.url}/v1/data/data/f.bin`);
        } catch (err) {
          if (attempt >= 3 || (err as Error).message !== 'terminated') throw err;
        }
      }
      assert.equal(sha256(res.body), sha256(data));
    } finally {
      await worker.destroy();
    }
  });

  test('connections beyond maxConnections get 503 OVERLOADED, and are served again once others close', async () => {
    const worker = await WorkerProcess.start({ id: 'w-cap', mounts: { data: dir }, limits: { maxConnections: 4 } });
    const url = new URL(worker.url);
    const held = await Promise.all(
      Array.from({ length: 4 }, () => new Promise<ReturnType<typeof connect>>((resolve) => {
        const socket = connect({ host: url.hostname, port: Number(url.port) }, () => resolve(socket));
        socket.on('error', () => {});
      })),
    );
    try {
      // The harness's own pooled connection (its health check) is one of the allowed ones.
      const refused = await getOnNewConnection(`${worker.url}/healthz`);
      assert.equal(refused.status, 503);
      assert.equal(refused.code, 'OVERLOADED');
      assert.match(refused.body.toString(), /"code":"OVERLOADED"/);
      for (const socket of held) socket.destroy();
      await waitFor('a connection under the cap to be served', async () => (await getOnNewConnection(`${worker.url}/healthz`)).status === 200);
    } finally {
      for (const socket of held) socket.destroy();
      await worker.destroy();
    }
  });
});

describe('bounded resources: slow sources', () => {
  let origin: Origin;
  let dir: string;
  let worker: WorkerProcess;
  const slowPages = 30;
  const local = randomBytes(8 * PAGE);

  before(async () => {
    origin = await Origin.start();
    await origin.put('slow.bin', randomBytes(slowPages * PAGE));
    await origin.put('f.bin', randomBytes(2 * PAGE));
    dir = await mkdtemp(join(tmpdir(), 'fanout-mountb-'));
    await writeFile(join(dir, 'cold.bin'), local);
    worker = await WorkerProcess.start({ id: 'w-src', mounts: { web: origin.url, local: dir } });
  });
  after(async () => {
    await worker.destroy();
    await origin.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('a slow source on one mount does not block cold pages of another, and its reads stop when clients leave', async () => {
    const slow = await stat(worker, '/web/slow.bin');
    origin.behave({ bytesPerSecond: 5000 }, 'slow.bin');
    const clients = Array.from({ length: slowPages }, (_, i) => {
      const abort = new AbortController();
      const done = fetch(`${worker.url}/v1/page/web/slow.bin?v=${encodeURIComponent(slow.version)}&size=${slow.size}&i=${i}`, { signal: abort.signal })
        .then((res) => res.arrayBuffer())
        .catch(() => undefined);
      return { abort, done };
    });
    try {
      await waitFor('every slow page to have a fill', async () => (await worker.metrics()).fanout_source_reads_inflight === slowPages);
      const cold = await stat(worker, '/local/cold.bin');
      for (let i = 0; i < 8; i++) {
        const res = await readAll(`${worker.url}/v1/page/local/cold.bin?v=${encodeURIComponent(cold.version)}&size=${cold.size}&i=${i}`);
        assert.equal(res.status, 200);
        assert.ok(res.body.equals(local.subarray(i * PAGE, (i + 1) * PAGE)), `cold page ${i} of the other mount`);
      }
    } finally {
      for (const client of clients) client.abort.abort();
      await Promise.all(clients.map((c) => c.done));
    }
    await waitFor('source reads in flight to return to 0 after the clients left', async () => (await worker.metrics()).fanout_source_reads_inflight === 0);
    origin.normal();
  });

  test('/v1/page refuses a size or version that is not the file\'s, without reading the source or storing a page', async () => {
    const file = await stat(worker, '/web/f.bin');
    const before = await worker.metrics();
    const reads = origin.counters.log.filter((r) => r.method === 'GET').length;
    const v = encodeURIComponent(file.version);
    const cases = [
      { query: `v=${v}&size=${file.size + 1}&i=0`, status: 400, code: 'INVALID_ARGUMENT' },
      { query: `v=${v}&size=${file.size - 1}&i=0`, status: 400, code: 'INVALID_ARGUMENT' },
      { query: `v=${v}&size=1&i=0`, status: 400, code: 'INVALID_ARGUMENT' },
      { query: `v=bogus&size=${file.size}&i=0`, status: 412, code: 'SOURCE_CHANGED' },
      { query: `v=bogus&size=${file.size}&i=1`, status: 412, code: 'SOURCE_CHANGED' },
      { query: `v=${v}&size=${file.size}&i=0&h=${'a'.repeat(64)}`, status: 400, code: 'INVALID_ARGUMENT' },
    ];
    for (const { query, status, code } of cases) {
      const res = await readAll(`${worker.url}/v1/page/web/f.bin?${query}`);
      assert.equal(res.status, status, `${query}: ${res.body}`);
      assert.equal(res.code, code, query);
    }
    const afterwards = await worker.metrics();
    assert.equal(origin.counters.log.filter((r) => r.method === 'GET').length, reads, 'no source read');
    assert.equal(afterwards.fanout_source_reads_total, before.fanout_source_reads_total);
    assert.equal(afterwards.fanout_store_pages, before.fanout_store_pages, 'nothing stored');
    const good = await readAll(`${worker.url}/v1/page/web/f.bin?v=${v}&size=${file.size}&i=1`);
    assert.equal(good.status, 200);
  });
});
