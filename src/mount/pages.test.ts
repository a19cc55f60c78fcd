import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StatResult } from '../client/index.js';
import { FanoutError } from '../core/errors.js';
import { MountPages, type PageFetch } from './pages.js';

const file = (path: string, size = 100): StatResult => ({ mount: 'data', path, size, mtimeMs: 0, version: 'v1' });

function fetcher() {
  const fetched: string[] = [];
  /** The fetches that went by batch request. */
  const batched: string[] = [];
  const released: string[] = [];
  const waiting: (() => void)[] = [];
  let failNext = false;
  const fetchPage = async (f: StatResult, index: number): Promise<Buffer[]> => {
      fetched.push(`${f.path}#${index}`);
      await new Promise<void>((r) => waiting.push(r));
      if (failNext) {
        failNext = false;
        throw new FanoutError('WORKER_UNAVAILABLE', 'no worker');
      }
      return [Buffer.from(`${f.path}#${index}`)];
  };
  const source: PageFetch = {
    fetchPage,
    fetchBatchedPage(f, index) {
      batched.push(`${f.path}#${index}`);
      return fetchPage(f, index);
    },
    releasePage(page) {
      released.push(page[0]!.toString());
    },
  };
  const arrive = async () => {
    while (waiting.length === 0) await new Promise((r) => setImmediate(r));
    waiting.shift()!();
  };
  return { source, fetched, batched, released, arrive, failNext: () => (failNext = true) };
}

test('readers of the same page share one fetch, and the page is given back only when the last lets go', async () => {
  const f = fetcher();
  const pages = new MountPages(f.source, 100, 0);
  const a = pages.acquire(file('a'), 0);
  const b = pages.acquire(file('a'), 0);
  await f.arrive();
  const [la, lb] = await Promise.all([a, b]);
  assert.deepEqual(f.fetched, ['a#0']);
  assert.equal(la.chunks[0]!.toString(), 'a#0');
  la.release();
  la.release(); // a second release is nothing
  assert.deepEqual(f.released, []);
  lb.release();
  assert.deepEqual(f.released, ['a#0']);
});

test('unheld pages are kept up to the capacity, oldest given back first, and found again by a reader', async () => {
  const f = fetcher();
  const pages = new MountPages(f.source, 100, 250);
  for (const name of ['a', 'b', 'c']) {
    pages.prefetch(file(name), 0);
    await f.arrive();
  }
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(f.released, ['a#0'], '300 bytes kept > 250: the oldest goes');
  const lease = await pages.acquire(file('b'), 0);
  assert.deepEqual(f.fetched, ['a#0', 'b#0', 'c#0'], 'b was found, not fetched again');
  assert.equal(lease.chunks[0]!.toString(), 'b#0');
  assert.deepEqual(pages.stats(), { pages: 2, idlePages: 1, idleBytes: 100 });
});

test('a failed fetch fails its readers and is forgotten, so the next reader fetches again', async () => {
  const f = fetcher();
  const pages = new MountPages(f.source, 100, 1000);
  f.failNext();
  const failed = pages.acquire(file('a'), 0);
  await f.arrive();
  await assert.rejects(failed, /no worker/);
  const again = pages.acquire(file('a'), 0);
  await f.arrive();
  assert.equal((await again).chunks[0]!.toString(), 'a#0');
  assert.deepEqual(f.fetched, ['a#0', 'a#0']);
});

test('pages fetched ahead go by batch request, and a reader joins them instead of fetching again', async () => {
  const f = fetcher();
  const pages = new MountPages(f.source, 100, 1000);
  pages.prefetch(file('a'), 0);
  pages.prefetch(file('b'), 0);
  const reader = pages.acquire(file('a'), 0);
  await f.arrive();
  await f.arrive();
  assert.equal((await reader).chunks[0]!.toString(), 'a#0');
  assert.deepEqual(f.batched, ['a#0', 'b#0']);
  assert.deepEqual(f.fetched, ['a#0', 'b#0'], 'one fetch per page');
});

test('a read asks for its page alone unless told it may ride in a batch', async () => {
  const f = fetcher();
  const pages = new MountPages(f.source, 100, 1000);
  const alone = pages.acquire(file('a'), 1);
  const first = pages.acquire(file('b'), 0, true);
  await f.arrive();
  await f.arrive();
  await Promise.all([alone, first]);
  assert.deepEqual(f.fetched, ['a#1', 'b#0']);
  assert.deepEqual(f.batched, ['b#0']);
});

test('pages fetched ahead are bounded in flight: past the slots they wait, past the queue the oldest waiting are dropped; a read of a dropped page fetches it', async () => {
  const f = fetcher();
  const pages = new MountPages(f.source, 100, 1 << 20);
  for (let i = 0; i < 10_000; i++) pages.prefetch(file(`f${i}`), 0);
  assert.equal(f.fetched.length, 64, 'one batch request of fetches at once, not 10,000');
  assert.deepEqual(pages.prefetchStats(), { inflight: 64, queued: 256, dropped: 10_000 - 64 - 256 });
  pages.prefetch(file('f0'), 0); // on its way: joined, no slot
  assert.equal(f.fetched.length, 64);
  for (let i = 0; i < 64; i++) await f.arrive();
  await new Promise((r) => setImmediate(r));
  assert.equal(f.fetched.length, 128, 'as fetches end, the waiting ones go');
  assert.equal(f.fetched[64], 'f9744#0', 'the newest waited; the oldest were dropped');
  const read = pages.acquire(file('f100'), 0);
  await new Promise((r) => setImmediate(r));
  assert.equal(f.fetched.at(-1), 'f100#0', 'a dropped prefetch is a read like any other');
  let answered = false;
  void read.then(() => (answered = true));
  while (!answered || pages.prefetchStats().inflight > 0) {
    await f.arrive();
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  }
  assert.equal((await read).chunks[0]!.toString(), 'f100#0');
  assert.deepEqual(pages.prefetchStats(), { inflight: 0, queued: 0, dropped: 10_000 - 64 - 256 });
});
