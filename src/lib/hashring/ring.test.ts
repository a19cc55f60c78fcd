import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { HashRing } from './index.js';
import type { Member } from '../../core/types.js';

const GiB = 1024 ** 3;
const KEY_COUNT = 100_000;
// Page keys look like this in production: hex prefixes of a SHA-256.
const KEYS = Array.from({ length: KEY_COUNT }, (_, i) =>
  createHash('sha256').update(`mount\0file-${i % 97}\0v1\0${i}`).digest('hex').slice(0, 40),
);

function workers(count: number, capacity = 100 * GiB, prefix = 'worker'): Member[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `${prefix}-${String(i).padStart(3, '0')}`,
    url: `http://10.0.${i >> 8}.${i & 255}:7450`,
    capacity,
  }));
}

function primaries(ring: HashRing, keys: readonly string[] = KEYS): string[] {
  return keys.map((k) => ring.owners(k, 1)[0]!.id);
}

function shares(owners: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of owners) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

/** max and min of members' key counts, relative to the mean. */
function balance(ring: HashRing): { max: number; min: number } {
  const counts = shares(primaries(ring));
  const mean = KEY_COUNT / ring.size;
  const values = ring.members().map((m) => counts.get(m.id) ?? 0);
  return { max: Math.max(...values) / mean, min: Math.min(...values) / mean };
}

test('owners do not depend on the order of the member list', () => {
  const members = workers(12);
  const shuffled = [...members].reverse();
  shuffled.push(shuffled.splice(3, 1)[0]!);
  const a = new HashRing(members);
  const b = new HashRing(shuffled);
  for (const key of KEYS.slice(0, 5000)) {
    assert.deepEqual(b.owners(key, 3).map((m) => m.id), a.owners(key, 3).map((m) => m.id));
  }
  assert.deepEqual(b.members(), a.members());
});

test('any string is a valid key and placement is stable', () => {
  const ring = new HashRing(workers(5));
  for (const key of ['', 'a', 'not hex at all ✓', 'x'.repeat(10_000)]) {
    const first = ring.owners(key, 2).map((m) => m.id);
    assert.equal(first.length, 2);
    assert.deepEqual(ring.owners(key, 2).map((m) => m.id), first);
  }
});

test('balance with equal capacities at 4, 16 and 100 workers', (t) => {
  const limits: Record<number, number> = { 4: 1.1, 16: 1.1, 100: 1.2 };
  for (const n of [4, 16, 100]) {
    const { max, min } = balance(new HashRing(workers(n)));
    t.diagnostic(`${n} workers: max/mean ${max.toFixed(3)}, min/mean ${min.toFixed(3)} over ${KEY_COUNT} keys`);
    assert.ok(max <= limits[n]!, `${n} workers: max/mean ${max.toFixed(3)} > ${limits[n]}`);
    assert.ok(min >= 2 - limits[n]! - 0.05, `${n} workers: min/mean ${min.toFixed(3)} too low`);
  }
});

test('share is roughly proportional to capacity', (t) => {
  const members: Member[] = [
    ...workers(4, 100 * GiB, 'small'),
    ...workers(4, 200 * GiB, 'medium'),
    ...workers(2, 400 * GiB, 'large'),
  ];
  const ring = new HashRing(members);
  const counts = shares(primaries(ring));
  const totalCapacity = members.reduce((sum, m) => sum + m.capacity, 0);
  for (const m of members) {
    const expected = (KEY_COUNT * m.capacity) / totalCapacity;
    const ratio = (counts.get(m.id) ?? 0) / expected;
    assert.ok(ratio > 0.85 && ratio < 1.15, `${m.id}: ${ratio.toFixed(3)} of its capacity share`);
  }
  assert.ok(ring.vnodes('large-000') > 3.5 * ring.vnodes('small-000'));
  // Absolute weighting: vnodes follow GiB directly.
  const absolute = new HashRing(members, { vnodesPerGiB: 2 });
  assert.equal(absolute.vnodes('small-000'), 200);
  assert.equal(absolute.vnodes('large-001'), 800);
  t.diagnostic(`weighted ring: small ${ring.vnodes('small-000')}, large ${ring.vnodes('large-000')} vnodes`);
});

test('min and max vnodes bound the weighting; bad capacities count as average', () => {
  const ring = new HashRing(
    [
      { id: 'tiny', url: 'http://a', capacity: 1 },
      { id: 'huge', url: 'http://b', capacity: 1e15 },
      { id: 'unknown', url: 'http://c', capacity: Number.NaN },
    ],
    { minVnodes: 32, maxVnodes: 2000 },
  );
  assert.equal(ring.vnodes('tiny'), 32);
  assert.equal(ring.vnodes('huge'), 2000);
  assert.ok(ring.vnodes('unknown') >= 32);
  assert.equal(ring.vnodes('absent'), 0);
});

test('adding a member moves about 1/(N+1) of keys, all of them to the newcomer', (t) => {
  for (const n of [4, 16, 100]) {
    const before = workers(n);
    const newcomer: Member = { id: 'newcomer', url: 'http://10.9.9.9:7450', capacity: 100 * GiB };
    const a = primaries(new HashRing(before));
    const b = primaries(new HashRing([...before, newcomer]));
    let moved = 0;
    for (let i = 0; i < KEY_COUNT; i++) {
      if (a[i] !== b[i]) {
        moved++;
        assert.equal(b[i], 'newcomer', `key ${i} moved from ${a[i]} to ${b[i]}`);
      }
    }
    const expected = KEY_COUNT / (n + 1);
    t.diagnostic(`${n}→${n + 1} workers: moved ${moved} keys = ${(moved / expected).toFixed(3)} × 1/(N+1)`);
    assert.ok(Math.abs(moved - expected) <= 0.25 * expected, `${n}: moved ${moved}, expected ~${expected.toFixed(0)}`);
  }
});

test('removing a member moves only its own keys', () => {
  const members = workers(16);
  const gone = members[7]!.id;
  const a = primaries(new HashRing(members));
  const b = primaries(new HashRing(members.filter((m) => m.id !== gone)));
  let moved = 0;
  for (let i = 0; i < KEY_COUNT; i++) {
    if (a[i] === gone) {
      assert.notEqual(b[i], gone);
      moved++;
    } else {
      assert.equal(b[i], a[i]);
    }
  }
  assert.ok(moved > 0);
});

test('a removed primary is replaced by the key\'s former first fallback', () => {
  const members = workers(10);
  const full = new HashRing(members);
  const without = new Map(members.map((m) => [m.id, new HashRing(members.filter((o) => o.id !== m.id))]));
  for (const key of KEYS.slice(0, 5000)) {
    const [primary, fallback] = full.owners(key, 2);
    assert.equal(without.get(primary!.id)!.owners(key, 1)[0]!.id, fallback!.id);
  }
});

test('owners(n) are distinct, ordered primary first, and capped at the member count', () => {
  const ring = new HashRing(workers(6));
  for (const key of KEYS.slice(0, 3000)) {
    const all = ring.owners(key, 100);
    assert.equal(all.length, 6);
    assert.equal(new Set(all.map((m) => m.id)).size, 6);
    assert.deepEqual(ring.owners(key, 3), all.slice(0, 3));
    assert.deepEqual(ring.owners(key, 1), all.slice(0, 1));
  }
  assert.deepEqual(ring.owners('k', 0), []);
  assert.deepEqual(new HashRing([]).owners('k', 3), []);
  assert.equal(new HashRing(workers(1)).owners('k', 5).length, 1);
});

test('duplicate member ids are rejected; the ring keeps its own copy of members', () => {
  const members = workers(3);
  assert.throws(() => new HashRing([...members, { ...members[0]! }]), { code: 'INVALID_ARGUMENT' });
  const ring = new HashRing(members);
  members[0]!.url = 'http://changed';
  ring.members()[1]!.url = 'http://changed';
  assert.ok(ring.members().every((m) => m.url !== 'http://changed'));
});

test('a one-member ring (its vnodes not placed) owns every key, and a second member takes its share', () => {
  const [lone] = workers(1);
  const ring = new HashRing([lone!]);
  assert.equal(ring.vnodes(lone!.id), 1024);
  for (const key of KEYS.slice(0, 1000)) assert.deepEqual(ring.owners(key, 3), [lone]);
  // Growing to two members: the newcomer takes about half, the lone member keeps the rest.
  const counts = shares(primaries(new HashRing(workers(2)), KEYS.slice(0, 10_000)));
  assert.equal(counts.size, 2);
  for (const n of counts.values()) assert.ok(n > 4000 && n < 6000, `share ${n} of 10,000`);
});
