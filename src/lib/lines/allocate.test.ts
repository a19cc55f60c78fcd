import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allocateLine, maxMinFair } from './allocate.js';

const M = 1_000_000;
const rates = (shares: Map<string, { rate: number }>) => Object.fromEntries([...shares].map(([id, s]) => [id, Math.round(s.rate)]));

test('max-min fair: small demands are met in full and the rest is split equally', () => {
  const out = maxMinFair(100, new Map([['a', 10], ['b', Infinity], ['c', Infinity], ['d', 0]]));
  assert.deepEqual(Object.fromEntries(out), { a: 10, b: 45, c: 45, d: 0 });
  assert.deepEqual(Object.fromEntries(maxMinFair(100, new Map([['a', 30], ['b', 20]]))), { a: 30, b: 20 }, 'nothing is forced on a worker that asked for less');
});

test('a busy worker gets what idle workers leave (work-conserving)', () => {
  const idle = { read: 0, preload: 0 };
  const shares = allocateLine(100 * M, 10 * M, new Map([['busy', { read: Infinity, preload: 0 }], ['b', idle], ['c', idle]]));
  assert.deepEqual(rates(shares), { busy: 100 * M, b: 0, c: 0 });
  // Two busy, one using a little: the little one keeps what it uses, the busy split the rest.
  const mixed = allocateLine(100 * M, 10 * M, new Map([['x', { read: Infinity, preload: 0 }], ['y', { read: Infinity, preload: 0 }], ['z', { read: 10 * M, preload: 0 }]]));
  assert.deepEqual(rates(mixed), { x: 45 * M, y: 45 * M, z: 10 * M });
});

test('what nobody asked for is split equally, so a sudden read does not start from zero', () => {
  const shares = allocateLine(90 * M, 0, new Map([['a', { read: 0, preload: 0 }], ['b', { read: 30 * M, preload: 0 }], ['c', { read: 0, preload: 0 }]]));
  assert.deepEqual(rates(shares), { a: 20 * M, b: 50 * M, c: 20 * M });
});

test('waiting reads go before preloads, and preloads keep their floor', () => {
  const shares = allocateLine(100 * M, 10 * M, new Map([['reader', { read: Infinity, preload: 0 }], ['loader', { read: 0, preload: Infinity }]]));
  assert.equal(shares.get('reader')!.rate, 90 * M, 'reads take everything but the preload floor');
  assert.equal(shares.get('loader')!.rate, 10 * M);
  assert.equal(shares.get('loader')!.preloadMin, 10 * M, "the floor is the loader's even when reads wait");
  // Without waiting reads, preloads take the whole line.
  const alone = allocateLine(100 * M, 10 * M, new Map([['reader', { read: 0, preload: 0 }], ['loader', { read: 0, preload: Infinity }]]));
  assert.equal(alone.get('loader')!.rate, 100 * M);
  // A floor never takes from reads more than preloads want.
  const small = allocateLine(100 * M, 10 * M, new Map([['reader', { read: Infinity, preload: 0 }], ['loader', { read: 0, preload: 2 * M }]]));
  assert.deepEqual(rates(small), { reader: 98 * M, loader: 2 * M });
});

test('shares never add up to more than the rate', () => {
  for (let trial = 0; trial < 500; trial++) {
    const demands = new Map<string, { read: number; preload: number }>();
    const n = 1 + (trial % 7);
    const pick = (i: number) => [0, 1e6, 5e7, Infinity][(trial * 7 + i * 13) % 4]!;
    for (let i = 0; i < n; i++) demands.set(`m${i}`, { read: pick(i), preload: pick(i + 3) });
    const total = [...allocateLine(100 * M, (trial % 3) * 10 * M, demands).values()].reduce((s, v) => s + v.rate, 0);
    assert.ok(total <= 100 * M + 1, `trial ${trial}: ${total}`);
  }
});
