import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FanoutClient } from '../../src/client/index.js';
import { READ_AHEAD_BYTES, readAhead } from '../../src/client/readahead.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { readAll, sha } from '../harness/streams.js';

const MiB = 1024 * 1024;

/** Counts the page requests of a client (all its reads share the session's fetcher) while they run. */
function countFetches(client: FanoutClient): { inFlight: () => number; bytes: () => number } {
  const fetcher = client.session.fetcher;
  const fetch = fetcher.fetch.bind(fetcher);
  let inFlight = 0;
  let bytes = 0;
  fetcher.fetch = async (...args) => {
    inFlight++;
    try {
      const page = await fetch(...args);
      for (const chunk of page) bytes += chunk.length;
      return page;
    } finally {
      inFlight--;
    }
  };
  return { inFlight: () => inFlight, bytes: () => bytes };
}

/** Resolves with the stream once its consumer has had a first chunk, then reads no further. */
async function firstChunkThenStall(stream: Readable): Promise<Readable> {
  await new Promise<void>((resolve, reject) => {
    stream.once('error', reject);
    stream.once('data', () => {
      stream.pause();
      resolve();
    });
  });
  return stream;
}

/** Reads the rest of a readPages() (pages fetched before close() are still handed on). */
async function drain(pages: AsyncIterable<Buffer[]>): Promise<void> {
  for await (const page of pages) assert.ok(page.length > 0);
}

/**
 * A program using the SDK with real workers: reads started by the hundred and left unread, given
 * up (break, destroy, abort) mid-way. What the SDK fetches for them is bounded, and given back.
 */
describe('SDK reads a program starts and abandons', () => {
  let source: string;
  let workers: WorkerProcess[];
  let body: Buffer;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-sdk-readers-'));
    body = randomBytes(16 * MiB);
    await writeFile(join(source, 'a.bin'), body);
    workers = await startCluster(3, { mounts: { data: source }, pageSize: '1MiB' });
    const warm = new FanoutClient({ endpoint: workers[0]!.url });
    try {
      assert.equal(sha(await readAll(await warm.createReadStream('/data/a.bin'))), sha(body));
    } finally {
      await warm.close();
    }
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  test('120 reads whose consumers stop after the first chunk fetch at most their next page each plus the shared read-ahead', { timeout: 180_000 }, async () => {
    const client = new FanoutClient({ endpoint: workers[0]!.url, concurrency: 6 });
    const fetches = countFetches(client);
    const streams: Readable[] = [];
    try {
      for (let i = 0; i < 120; i++) streams.push(await firstChunkThenStall(await client.createReadStream('/data/a.bin')));
      // Every page a stalled read will ever fetch was asked for before its first chunk was handed on.
      await waitFor('the stalled reads’ page requests to end', async () => fetches.inFlight() === 0, 60_000);
      const fetched = fetches.bytes();
      console.log(`120 stalled reads fetched ${Math.round(fetched / MiB)} MiB (window 6 pages of 1 MiB; read-ahead ${READ_AHEAD_BYTES / MiB} MiB)`);
      // Before: each read fetched its whole window, 120 × 6 MiB = 720 MiB for reads nobody reads.
      assert.ok(fetched <= 120 * MiB + READ_AHEAD_BYTES, `fetched ${fetched} bytes`);
      assert.ok(readAhead.inUse <= READ_AHEAD_BYTES);
    } finally {
      for (const stream of streams) stream.destroy();
    }
    await waitFor('the read-ahead room to come back once the reads are destroyed', async () => readAhead.inUse === 0);
    assert.equal(sha(await readAll(await client.createReadStream('/data/a.bin'))), sha(body), 'a later read is right');
    await client.close();
  });

  test('reads given up 300 times (break, destroy, abort) give their read-ahead back and leave the client usable', { timeout: 180_000 }, async () => {
    const client = new FanoutClient({ endpoint: workers[0]!.url });
    const file = await client.stat('/data/a.bin');
    try {
      for (let i = 0; i < 100; i++) {
        for await (const chunk of await client.createReadStream('/data/a.bin')) {
          assert.ok(chunk.length > 0);
          break;
        }
        await firstChunkThenStall(await client.createReadStream('/data/a.bin')).then((s) => s.destroy());
        const controller = new AbortController();
        let pages = 0;
        await assert.rejects(
          (async () => {
            for await (const page of client.readPages(file, { signal: controller.signal })) {
              assert.ok(page.length > 0);
              if (++pages === 2) controller.abort();
            }
          })(),
          (err: Error & { code?: string }) => err.code === 'ABORTED',
        );
      }
      await waitFor('the read-ahead room to come back', async () => readAhead.inUse === 0);
      assert.equal(sha(await readAll(await client.createReadStream('/data/a.bin'))), sha(body));
    } finally {
      await client.close();
    }
  });

  test('close() ends the reads in flight with ABORTED, opens no connection again, and every later call fails ABORTED', { timeout: 180_000 }, async () => {
    const client = new FanoutClient({ endpoint: workers[0]!.url });
    const file = await client.stat('/data/a.bin');
    // Reads that cannot have ended before close(): their consumers hold them mid-way.
    const stalled: Readable[] = [];
    for (let i = 0; i < 8; i++) stalled.push(await firstChunkThenStall(await client.createReadStream('/data/a.bin')));
    const pages = client.readPages(file);
    await pages.next();
    // And calls made just before it: they end ABORTED however far they got.
    // Settled as they end (one may end before close() has returned: it must not be unhandled).
    const starting = Promise.allSettled([readAll(await client.createReadStream('/data/a.bin')), ...Array.from({ length: 8 }, (_, index) => client.fetchPage(file, index))]);
    await client.close();
    const outcomes = [...(await starting), ...(await Promise.allSettled([...stalled.map((s) => readAll(s.resume())), drain(pages)]))];
    // Before: all went on and succeeded, on connections opened again in the closed session.
    for (const outcome of outcomes) {
      assert.equal(outcome.status, 'rejected', 'a read in flight at close() fails');
      assert.equal((outcome.reason as { code?: string }).code, 'ABORTED', String(outcome.reason));
    }
    assert.equal(client.session.stats().connectionPools, 0, 'no connection pool opened again after close()');
    for (const call of [() => client.stat('/data/a.bin'), () => client.list('/data/'), () => client.createReadStream('/data/a.bin'), () => client.readPage(file, 0), () => client.fetchPage(file, 0), () => client.status()]) {
      await assert.rejects(call(), (err: Error & { code?: string }) => err.code === 'ABORTED' && /closed/.test(err.message));
    }
    assert.equal(client.session.stats().connectionPools, 0);
  });

  test('streams their consumers paused hear of close() and of their signal at once, without being read again', { timeout: 180_000 }, async () => {
    const client = new FanoutClient({ endpoint: workers[0]!.url });
    /** The stream's error and close, as they come: the consumer neither reads nor resumes it. */
    const ending = (stream: Readable) => new Promise<{ code?: string }>((resolve) => stream.once('error', (err) => stream.once('close', () => resolve(err as { code?: string }))));
    const controller = new AbortController();
    const byClose = await firstChunkThenStall(await client.createReadStream('/data/a.bin'));
    const bySignal = await firstChunkThenStall(await client.createReadStream('/data/a.bin', { signal: controller.signal }));
    const unread = await client.createReadStream('/data/a.bin');
    const [closeEnd, signalEnd, unreadEnd] = [ending(byClose), ending(bySignal), ending(unread)];
    controller.abort();
    // Before: a paused stream stayed open (no error, no close) until its consumer read it again.
    assert.equal((await signalEnd).code, 'ABORTED');
    assert.ok(!byClose.destroyed, 'the other reads go on');
    await client.close();
    assert.equal((await closeEnd).code, 'ABORTED');
    assert.equal((await unreadEnd).code, 'ABORTED');
  });

  test('close() of one client leaves the reads of another sharing its session alone', { timeout: 180_000 }, async () => {
    const closing = new FanoutClient({ endpoint: workers[0]!.url });
    const staying = new FanoutClient({ endpoint: workers[0]!.url });
    try {
      assert.equal(closing.session, staying.session);
      const mine = readAll(await closing.createReadStream('/data/a.bin'));
      const theirs = readAll(await staying.createReadStream('/data/a.bin'));
      await closing.close();
      const [mineEnded, theirsEnded] = await Promise.allSettled([mine, theirs]);
      assert.equal(mineEnded.status === 'rejected' && (mineEnded.reason as { code?: string }).code, 'ABORTED', 'the closed client’s read fails ABORTED');
      assert.equal(theirsEnded.status === 'fulfilled' && sha(theirsEnded.value), sha(body), 'the other client’s read is whole');
      assert.equal(sha(await readAll(await staying.createReadStream('/data/a.bin'))), sha(body));
    } finally {
      await staying.close();
    }
  });

  test('close() while a stat waits on an endpoint that never answers: ABORTED, and no pool is opened again for the next endpoint', { timeout: 60_000 }, async () => {
    const held: Socket[] = [];
    const silent = createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const connected = new Promise((resolve) => silent.once('connection', resolve));
    const client = new FanoutClient({ endpoint: [`http://127.0.0.1:${(silent.address() as { port: number }).port}`, workers[0]!.url] });
    try {
      const stat = client.stat('/data/a.bin');
      stat.catch(() => {}); // observed below
      await connected;
      await client.close();
      // Before: the stat moved on to the next endpoint in a JSON pool opened again in the closed session, and succeeded.
      await assert.rejects(stat, (err: Error & { code?: string }) => err.code === 'ABORTED');
      assert.deepEqual({ json: client.session.stats().jsonPools, pages: client.session.stats().connectionPools }, { json: 0, pages: 0 });
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
