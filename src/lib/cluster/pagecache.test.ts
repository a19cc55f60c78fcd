import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../../core/errors.js';
import { PageCache } from './pagecache.js';

const page = (text: string) => [Buffer.from(text)];

test('readers asking for the same page at once share one fetch', async () => {
  const cache = new PageCache(100);
  let fetches = 0;
  let release!: (chunks: Buffer[]) => void;
  const fetch = () => {
    fetches++;
    return new Promise<Buffer[]>((r) => (release = r));
  };
  const readers = Array.from({ length: 8 }, () => cache.get('k', 4, fetch));
  release(page('abcd'));
  for (const chunks of await Promise.all(readers)) assert.equal(Buffer.concat(chunks).toString(), 'abcd');
  assert.equal(fetches, 1);
  assert.deepEqual(await cache.get('k', 4, fetch), page('abcd'), 'then served from memory');
  assert.equal(fetches, 1);
  assert.deepEqual(cache.stats(), { hits: 1, joined: 7, fetched: 1, bytes: 4, pages: 1 });
});

test('a failed fetch is not kept: the next reader fetches again', async () => {
  const cache = new PageCache(100);
  await assert.rejects(cache.get('k', 4, () => Promise.reject(new FanoutError('WORKER_UNAVAILABLE', 'down'))), /down/);
  assert.deepEqual(await cache.get('k', 4, async () => page('good')), page('good'));
  assert.equal(cache.stats().fetched, 2);
});

test('least recently used pages leave when the byte budget is full', async () => {
  const cache = new PageCache(10);
  await cache.get('a', 4, async () => page('aaaa'));
  await cache.get('b', 4, async () => page('bbbb'));
  await cache.get('a', 4, async () => assert.fail('a is cached'));
  await cache.get('c', 4, async () => page('cccc')); // 12 bytes > 10: b (least recent) goes
  let refetched = false;
  await cache.get('b', 4, async () => ((refetched = true), page('bbbb')));
  assert.ok(refetched);
  assert.ok(cache.stats().bytes <= 10);
});

test('a zero budget still joins fetches in flight but keeps nothing', async () => {
  const cache = new PageCache(0);
  let fetches = 0;
  const fetch = async () => (fetches++, page('x'));
  await Promise.all([cache.get('k', 1, fetch), cache.get('k', 1, fetch)]);
  await cache.get('k', 1, fetch);
  assert.equal(fetches, 2);
});
