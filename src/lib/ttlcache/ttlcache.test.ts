import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';
import { TtlCache } from './index.js';

const missing = () => Promise.reject(new FanoutError('NOT_FOUND', 'no such file'));

test('not-found answers are reused for their TTL, then dropped at the next lookup, however many there were', async () => {
  const clock = new ManualClock(1_000);
  const cache = new TtlCache<number>(2_000, clock);
  let loads = 0;
  const load = () => (loads++, missing());
  for (let i = 0; i < 1_000; i++) await cache.get(`/missing/${i}`, load).catch(() => {});
  await cache.get('/missing/0', load).catch(() => {});
  assert.equal(loads, 1_000, 'a missing path looked up again within its TTL is not loaded again');
  assert.equal(cache.size, 1_000);
  await clock.advance(2_000);
  await cache.get('/other', async () => 7);
  assert.equal(cache.size, 1, 'the expired answers went with the next lookup (before: only once 100,000 were held)');
});

test('a key answered again moves to the end, so it outlives the keys answered before it', async () => {
  const clock = new ManualClock(0);
  const cache = new TtlCache<number>(1_000, clock);
  await cache.get('a', async () => 1);
  await clock.advance(500);
  await cache.get('b', async () => 2);
  await clock.advance(600);
  cache.set('a', 3);
  assert.equal(cache.size, 2, 'a was expired but is set again; b still lives');
  await clock.advance(500);
  await cache.get('c', async () => 4);
  assert.equal(cache.size, 2, 'b expired and went; a (set again) and c stay');
  assert.equal(await cache.get('a', async () => 9), 3);
});
