import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from 'undici';
import { BatchPageReader, FanoutClient, type StatResult } from '../../src/client/index.js';
import { FanoutError } from '../../src/core/errors.js';
import type { Member, PageRef } from '../../src/core/types.js';
import { FrameReader, ROUTES, type BatchFrame } from '../../src/lib/wire/index.js';
import { manifestLocation, serializeManifest } from '../../src/release/manifest.js';
import { startCluster, TEST_ADMIN_TOKEN, type WorkerProcess } from '../harness/workers.js';

/**
 * POST /v1/pages against real worker processes: a batch that spans owners, a missing file in
 * the middle, a page corrupted on the way, an answer cut short, a stopped worker, an older worker.
 */
describe('batch page requests', () => {
  let source: string;
  let workers: WorkerProcess[];
  let client: FanoutClient;
  const files = new Map<string, Buffer>();
  const stats = new Map<string, StatResult>();
  const auth = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-batch-src-'));
    for (let i = 0; i < 48; i++) files.set(`idx/d${i % 4}/f${i}.seg`, randomBytes(1 + ((i * 7919) % 40_000)));
    for (const [path, data] of files) {
      await mkdir(join(source, path, '..'), { recursive: true });
      await writeFile(join(source, path), data);
    }
    workers = await startCluster(3, { mounts: { data: source }, pageSize: '1MiB' });
    client = new FanoutClient({ endpoint: workers[0]!.url, token: TEST_ADMIN_TOKEN });
    for (const path of files.keys()) stats.set(path, await client.stat(`/data/${path}`));
  });

  after(async () => {
    await client?.close();
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  const refOf = (path: string): PageRef => {
    const s = stats.get(path)!;
    return { mount: 'data', path, version: s.version, size: s.size, index: 0 };
  };

  /** POSTs a batch to one worker and decodes the answer. */
  async function postBatch(url: string, refs: PageRef[]): Promise<BatchFrame[]> {
    const res = await fetch(`${url}${ROUTES.pages}`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ items: refs }) });
    assert.equal(res.status, 200);
    const reader = new FrameReader(refs.length);
    const frames = reader.push(Buffer.from(await res.arrayBuffer()));
    assert.ok(reader.complete, 'the answer ends with its end frame');
    return frames.sort((a, b) => a.index - b.index);
  }

  test('one worker answers a batch of pages owned by every worker, relaying the others to their owners in batches', async () => {
    const paths = [...files.keys()];
    const before = await workers[1]!.metrics();
    const frames = await postBatch(workers[1]!.url, paths.map(refOf));
    assert.equal(frames.length, paths.length);
    frames.forEach((frame, i) => assert.ok(frame.kind === 'page' && frame.data.equals(files.get(paths[i]!)!), paths[i]));
    // Relayed by batch, not page by page: no per-page peer fill on the answering worker, and
    // every page read from the source once in the whole cluster, by its owner.
    const after = await workers[1]!.metrics();
    assert.equal((after.fanout_peer_bytes_total ?? 0) - (before.fanout_peer_bytes_total ?? 0), 0);
    const reads = await Promise.all(workers.map(async (w) => (await w.metrics()).fanout_source_reads_total ?? 0));
    assert.equal(
      reads.reduce((a, b) => a + b, 0),
      paths.length,
      `source reads per worker: ${reads.join(', ')}`,
    );
    assert.ok(reads.filter((n) => n > 0).length >= 2, `source reads per worker: ${reads.join(', ')}`);
  });

  test('the SDK sends small pages to their owners in batches and every page arrives verified', async () => {
    const paths = [...files.keys()];
    const pages = await Promise.all(paths.map((path) => client.fetchBatchedPage(stats.get(path)!, 0)));
    pages.forEach((page, i) => assert.ok(Buffer.concat(page).equals(files.get(paths[i]!)!), paths[i]));
    // Pages of several owners, far fewer requests than pages: each worker got its share.
    const served = await Promise.all(workers.map(async (w) => (await w.metrics()).fanout_page_hits_total ?? 0));
    assert.ok(served.filter((n) => n > 0).length >= 2, `hits per worker: ${served.join(', ')}`);
  });

  test('a missing file in the middle fails that page alone with NOT_FOUND', async () => {
    const [a, b] = [...files.keys()];
    const missing: PageRef = { mount: 'data', path: 'idx/no-such.seg', version: '1-1', size: 10, index: 0 };
    const frames = await postBatch(workers[0]!.url, [refOf(a!), missing, refOf(b!)]);
    assert.ok(frames[0]!.kind === 'page' && frames[0]!.data.equals(files.get(a!)!));
    assert.ok(frames[1]!.kind === 'error' && frames[1]!.error.code === 'NOT_FOUND', JSON.stringify(frames[1]));
    assert.ok(frames[2]!.kind === 'page' && frames[2]!.data.equals(files.get(b!)!));
    const sdk = await Promise.allSettled([
      client.fetchBatchedPage(stats.get(a!)!, 0),
      client.fetchBatchedPage({ ...missing, mtimeMs: 0 }, 0),
      client.fetchBatchedPage(stats.get(b!)!, 0),
    ]);
    assert.equal(sdk[0]!.status, 'fulfilled');
    assert.ok(sdk[1]!.status === 'rejected' && (sdk[1]!.reason as FanoutError).code === 'NOT_FOUND');
    assert.equal(sdk[2]!.status, 'fulfilled');
  });

  test('an item with a size that is not its file’s is refused alone with INVALID_ARGUMENT, owned or relayed, cold or stored', async () => {
    const paths = [...files.keys()].slice(8, 20);
    const wrong = (path: string, by: number): PageRef => ({ ...refOf(path), size: stats.get(path)!.size + by });
    for (const by of [-1, 1]) {
      for (const worker of workers) {
        const frames = await postBatch(worker.url, paths.map((p) => wrong(p, by)));
        frames.forEach((frame, i) => assert.ok(frame.kind === 'error' && frame.error.code === 'INVALID_ARGUMENT', `${paths[i]} size ${by}: ${JSON.stringify(frame)}`));
      }
    }
    // Stored pages (read once rightly) do not make a wrong size pass either, named by path or by
    // content hash (a release's pages: the key is the hash alone, so the size is checked against
    // the stored page).
    const sha = (path: string) => createHash('sha256').update(files.get(path)!).digest('hex');
    const hashed = (ref: PageRef, path: string): PageRef => ({ ...ref, hash: sha(path) });
    // A release manifest in the source names these pages' hashes (what `release publish` writes).
    const manifest = { schema: 1 as const, name: 'sizes', version: '1', createdAt: new Date().toISOString(), mount: 'data', prefix: '', pageSize: 1024 * 1024 };
    const listed = paths.map((path) => ({ path, size: stats.get(path)!.size, sourceVersion: stats.get(path)!.version, sha256: sha(path), pages: [sha(path)] }));
    await mkdir(join(source, manifestLocation('sizes', '1'), '..'), { recursive: true });
    await writeFile(join(source, manifestLocation('sizes', '1')), serializeManifest({ ...manifest, files: listed }));
    for (const frame of await postBatch(workers[0]!.url, paths.map((p) => hashed(refOf(p), p)))) assert.equal(frame.kind, 'page', JSON.stringify(frame));
    await postBatch(workers[0]!.url, paths.map(refOf));
    for (const worker of workers) {
      for (const refs of [paths.map((p) => wrong(p, -1)), paths.map((p) => hashed(wrong(p, -1), p)), paths.map((p) => hashed(wrong(p, 1), p))]) {
        const frames = await postBatch(worker.url, refs);
        frames.forEach((frame, i) => assert.ok(frame.kind === 'error' && frame.error.code === 'INVALID_ARGUMENT', `${paths[i]} stored: ${JSON.stringify(frame)}`));
      }
    }
    // The single-page route says the same of a stored content page.
    const ref = hashed(wrong(paths[0]!, -1), paths[0]!);
    const res = await fetch(`${workers[0]!.url}${ROUTES.page}/data/${ref.path}?v=${ref.version}&size=${ref.size}&i=0&h=${ref.hash}`, { headers: auth });
    assert.equal(res.status, 400, await res.text());
  });

  test('a hostile batch is refused whole with a stable code: too many items, a path escaping its mount', async () => {
    const ref = refOf([...files.keys()][0]!);
    const tooMany = await fetch(`${workers[0]!.url}${ROUTES.pages}`, { method: 'POST', headers: auth, body: JSON.stringify({ items: Array(513).fill(ref) }) });
    assert.equal(tooMany.status, 413);
    assert.equal(tooMany.headers.get('x-fanout-error'), 'REQUEST_TOO_LARGE');
    const notJson = await fetch(`${workers[0]!.url}${ROUTES.pages}`, { method: 'POST', headers: auth, body: '{' });
    assert.equal(notJson.headers.get('x-fanout-error'), 'INVALID_ARGUMENT');
    const frames = await postBatch(workers[0]!.url, [{ ...ref, path: '../../etc/passwd' }]);
    assert.ok(frames[0]!.kind === 'error' && frames[0]!.error.code === 'INVALID_PATH');
  });

  /** A reader whose only owner is a proxy in front of worker 1 that does `mangle` to batch answers. */
  async function throughProxy(mangle: (res: ServerResponse, upstream: IncomingMessage) => void, fn: (reader: BatchPageReader, proxied: Member) => Promise<void>) {
    const target = new URL(workers[0]!.url);
    const proxy: Server = createServer((req, res) => {
      const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (upstream) => {
        if (req.url === ROUTES.pages) return mangle(res, upstream);
        res.writeHead(upstream.statusCode ?? 502, upstream.headers);
        upstream.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxied: Member = { id: 'proxied', url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, capacity: 1 };
    const dispatcher = new Agent({ headersTimeout: 10_000, bodyTimeout: 10_000 });
    const reader = new BatchPageReader({
      pageSize: 1024 * 1024,
      owners: () => [proxied],
      headers: () => auth,
      dispatcher: () => dispatcher,
      // The per-page path of the real client: its ring, retries and checks.
      fallback: (ref, signal) => client.fetchPage({ ...ref, mtimeMs: 0 }, ref.index, signal),
    });
    try {
      await fn(reader, proxied);
    } finally {
      await dispatcher.close();
      await new Promise((resolve) => proxy.close(resolve));
    }
  }

  const readAll = (reader: BatchPageReader, paths: string[]) => Promise.all(paths.map((p) => reader.fetchPage(refOf(p)).then((page) => Buffer.concat(page))));

  test('a page corrupted in the middle of a batch is asked for again alone and arrives intact', async () => {
    // Pages of at least 64 bytes: the flipped byte (24) lands inside the first frame's payload.
    const paths = [...files.keys()].filter((p) => files.get(p)!.length >= 64).slice(0, 12);
    await throughProxy(
      (res, upstream) => {
        res.writeHead(200, upstream.headers);
        let flipped = false;
        let at = 0;
        upstream.on('data', (chunk: Buffer) => {
          // A byte inside the first frame's payload (past its 16-byte head).
          if (!flipped && at + chunk.length > 24) {
            chunk = Buffer.from(chunk);
            chunk[24 - at]! ^= 0xff;
            flipped = true;
          }
          at += chunk.length;
          res.write(chunk);
        });
        upstream.on('end', () => res.end());
      },
      async (reader) => {
        const pages = await readAll(reader, paths);
        pages.forEach((page, i) => assert.ok(page.equals(files.get(paths[i]!)!), paths[i]));
        assert.equal(reader.stats().fallbacks, 1, JSON.stringify(reader.stats()));
        assert.equal(reader.stats().batched, paths.length - 1);
      },
    );
  });

  test('an answer cut short mid-batch (its worker gone) loses no page: the rest are read one by one', async () => {
    const paths = [...files.keys()].slice(12, 30);
    await throughProxy(
      (res, upstream) => {
        res.writeHead(200, upstream.headers);
        let sent = 0;
        upstream.on('data', (chunk: Buffer) => {
          if (sent > 30_000) return res.destroy();
          sent += chunk.length;
          res.write(chunk);
        });
        upstream.on('end', () => res.destroy());
      },
      async (reader) => {
        const pages = await readAll(reader, paths);
        pages.forEach((page, i) => assert.ok(page.equals(files.get(paths[i]!)!), paths[i]));
        assert.ok(reader.stats().fallbacks > 0, JSON.stringify(reader.stats()));
      },
    );
  });

  test('a worker without the batch route (404) gets per-page requests from then on', async () => {
    const paths = [...files.keys()].slice(30, 36);
    await throughProxy(
      (res, upstream) => {
        upstream.resume();
        res.writeHead(404, { 'content-type': 'application/json', 'x-fanout-error': 'NOT_FOUND' });
        res.end(JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no such endpoint: /v1/pages' } }));
      },
      async (reader) => {
        const first = await readAll(reader, paths);
        first.forEach((page, i) => assert.ok(page.equals(files.get(paths[i]!)!)));
        const batches = reader.stats().batches;
        const again = await readAll(reader, paths);
        again.forEach((page, i) => assert.ok(page.equals(files.get(paths[i]!)!)));
        assert.equal(reader.stats().batches, batches, 'no batch is sent to a worker known to lack the route');
      },
    );
  });

  test('pages owned by a stopped worker still arrive: the failed batch falls back to per-page reads elsewhere', async () => {
    const stopped = workers[2]!;
    await stopped.stop();
    try {
      const fresh = new FanoutClient({ endpoint: workers[0]!.url, token: TEST_ADMIN_TOKEN });
      try {
        const paths = [...files.keys()];
        const pages = await Promise.all(paths.map((path) => fresh.fetchBatchedPage(stats.get(path)!, 0)));
        pages.forEach((page, i) => assert.ok(Buffer.concat(page).equals(files.get(paths[i]!)!), paths[i]));
      } finally {
        await fresh.close();
      }
    } finally {
      await stopped.launch();
    }
  });
});

