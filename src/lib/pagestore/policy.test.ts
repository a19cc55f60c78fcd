import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../core/clock.js';
import { LruIndex } from './lru.js';
import { PagePolicy } from './policy.js';

test('pins and TTLs apply to given keys and, through path rules, to pages stored later; they survive a restart', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-policy-'));
  try {
    const clock = new ManualClock(1000);
    const policy = new PagePolicy(join(dir, 'policy.json'), clock);
    await policy.pin(['aa'.repeat(20)], { mount: 'm', prefix: 'models/llm' });
    policy.onStored('bb'.repeat(20), 'm', 'models/llm/shard-1.bin');
    policy.onStored('cc'.repeat(20), 'm', 'models/llm-other/x.bin'); // a sibling, not below the prefix
    assert.equal(policy.isPinned('aa'.repeat(20)), true);
    assert.equal(policy.isPinned('bb'.repeat(20)), true);
    assert.equal(policy.isPinned('cc'.repeat(20)), false);

    await policy.setTtl(['dd'.repeat(20)], 500);
    assert.deepEqual(policy.expired(), []);
    await clock.advance(500);
    assert.deepEqual(policy.expired(), ['dd'.repeat(20)]);

    const reloaded = new PagePolicy(join(dir, 'policy.json'), clock);
    await reloaded.load();
    assert.equal(reloaded.isPinned('bb'.repeat(20)), true);
    assert.deepEqual(reloaded.expired(), ['dd'.repeat(20)]);

    await reloaded.forget(['aa'.repeat(20), 'bb'.repeat(20)], { mount: 'm', prefix: 'models/llm' });
    assert.deepEqual(reloaded.summary(), { pinned: 0, withTtl: 1, rules: [] });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('eviction skips pinned pages', () => {
  const lru = new LruIndex<{ key: string; size: number }>(100, { high: 0.9, low: 0.5 });
  for (const key of ['a', 'b', 'c', 'd']) lru.add({ key, size: 25 });
  const pinned = new Set(['a', 'b']);
  const victims = lru.evict(10, (e) => !pinned.has(e.key));
  assert.deepEqual(victims.map((v) => v.key), ['c', 'd']);
  assert.deepEqual([...lru.keys()], ['a', 'b']);
});
