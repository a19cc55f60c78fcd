import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LruIndex } from './lru.js';

const entry = (key: string, size = 10) => ({ key, size });

test('eviction starts above the high watermark and stops at the low one', () => {
  const lru = new LruIndex(100, { high: 0.9, low: 0.5 });
  for (let i = 0; i < 9; i++) lru.add(entry(`k${i}`));
  assert.equal(lru.used, 90);
  assert.deepEqual(lru.evict(), [], 'at the high watermark nothing is evicted');
  const victims = lru.evict(10);
  // 90 used + 10 incoming must come down to the low watermark (50): the 5 oldest go.
  assert.equal(lru.used, 40);
  assert.deepEqual(victims.map((v) => v.key), ['k0', 'k1', 'k2', 'k3', 'k4']);
});

test('touching an entry protects it from eviction', () => {
  const lru = new LruIndex(30, { high: 0.9, low: 0.34 });
  lru.add(entry('a'));
  lru.add(entry('b'));
  lru.add(entry('c'));
  lru.touch('a');
  const victims = lru.evict().map((v) => v.key);
  assert.deepEqual(victims, ['b', 'c']);
  assert.ok(lru.peek('a'));
});

test('entries that may not be evicted are skipped', () => {
  const lru = new LruIndex(20, { high: 0.5, low: 0.5 });
  lru.add(entry('pinned'));
  lru.add(entry('free'));
  const victims = lru.evict(0, (e) => e.key !== 'pinned');
  assert.deepEqual(victims.map((v) => v.key), ['free']);
  assert.equal(lru.used, 10);
});

test('replacing an entry keeps byte accounting right', () => {
  const lru = new LruIndex(100, { high: 0.9, low: 0.5 });
  lru.add(entry('a', 10));
  lru.add(entry('a', 30));
  assert.equal(lru.used, 30);
  lru.remove('a');
  assert.equal(lru.used, 0);
  assert.throws(() => new LruIndex(10, { high: 0.5, low: 0.9 }), RangeError);
});

test('lowering the capacity makes the next eviction work from the new figure', () => {
  const lru = new LruIndex(100, { high: 0.9, low: 0.5 });
  for (let i = 0; i < 8; i++) lru.add(entry(`k${i}`));
  assert.deepEqual(lru.evict(), []);
  lru.capacity = 40;
  assert.deepEqual(lru.evict().map((v) => v.key), ['k0', 'k1', 'k2', 'k3', 'k4', 'k5']);
  assert.equal(lru.used, 20);
  assert.throws(() => {
    lru.capacity = -1;
  }, RangeError);
});

test('entries count by their footprint where one is given (a page in whole disk blocks), their bytes beside', () => {
  const lru = new LruIndex<{ key: string; size: number; footprint?: number }>(16_384, { high: 0.9, low: 0.5 });
  for (let i = 0; i < 3; i++) lru.add({ key: `k${i}`, size: 200, footprint: 4096 });
  assert.deepEqual([lru.used, lru.bytes], [12_288, 600]);
  assert.deepEqual(lru.evict(4096).map((v) => v.key), ['k0', 'k1'], 'a fourth block would pass 90 % of 16 KiB: down to half');
  assert.deepEqual([lru.used, lru.bytes], [4096, 200]);
  lru.remove('k2');
  assert.deepEqual([lru.used, lru.bytes], [0, 0]);
});
