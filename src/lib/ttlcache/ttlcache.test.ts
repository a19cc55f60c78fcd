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

test('entries are bounded in bytes too: a flood of long missing paths holds at most maxBytes, the oldest dropped first', async () => {
  const clock = new ManualClock(0);
  const maxBytes = 1024 * 1024;
  const cache = new TtlCache<number>(2_000, clock, 100_000, maxBytes);
  const long = 'x'.repeat(4_000);
  for (let i = 0; i < 1_000; i++) await cache.get(`${long}/${i}`, missing).catch(() => {});
  assert.ok(cache.heldBytes <= maxBytes, `${cache.heldBytes} bytes counted, at most ${maxBytes}`);
  assert.ok(cache.size >= 80 && cache.size < 1_000, `${cache.size} entries of 4 KB keys kept (about 1 MiB / 12.3 KB)`);
  assert.ok(cache.remainingMs(`${long}/999`) > 0, 'the newest answer is kept');
  assert.equal(cache.remainingMs(`${long}/0`), 0, 'the oldest went first');
  cache.invalidate(`${long}/999`);
  for (let i = 0; i < 1_000; i++) cache.invalidate(`${long}/${i}`);
  assert.equal(cache.heldBytes, 0, 'every entry removed gives its bytes back');
  assert.equal(cache.size, 0);
});

test('a cached not-found answer keeps its code and message, not the source error it was made from', async () => {
  const cache = new TtlCache<number>(2_000, new ManualClock(0));
  const cause = Object.assign(new Error(`ENOENT: no such file or directory, stat '/srv/${'y'.repeat(4_000)}'`), { code: 'ENOENT' });
  const first = await cache.get('m/f', () => Promise.reject(new FanoutError('NOT_FOUND', '/m/f does not exist', { cause }))).catch((err) => err);
  assert.equal(first.cause, cause, 'the first caller gets the error as the source made it');
  const again = await cache.get('m/f', () => Promise.resolve(1)).catch((err) => err);
  assert.ok(again instanceof FanoutError);
  assert.equal(again.code, 'NOT_FOUND');
  assert.equal(again.message, '/m/f does not exist');
  assert.equal(again.cause, undefined, 'the cached answer holds no source error');
});
