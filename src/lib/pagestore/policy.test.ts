import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../core/clock.js';
import type { FanoutError } from '../../core/errors.js';
import type { CorruptStateFile } from '../statefile/index.js';
import { LruIndex } from './lru.js';
import { PagePolicy } from './policy.js';

test('pins and TTLs apply to given keys and, through path rules, to pages stored later; they survive a restart', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-policy-'));
  try {
    const clock = new ManualClock(1000);
    const policy = new PagePolicy(join(dir, 'policy.json'), clock);
    await policy.pin(['aa'.repeat(20)], { mount: 'm', prefix: 'models/llm' });
    await policy.onStoring('bb'.repeat(20), 'm', 'models/llm/shard-1.bin');
    await policy.onStoring('cc'.repeat(20), 'm', 'models/llm-other/x.bin'); // a sibling, not below the prefix
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

test('a corrupt policy.json is reported by path, moved aside, and the policy starts empty', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-policy-'));
  try {
    const file = join(dir, 'policy.json');
    await writeFile(file, '{"pins": ["aa", ');
    const reports: CorruptStateFile[] = [];
    const policy = new PagePolicy(file, new ManualClock(Date.UTC(2026, 11, 2, 4, 5, 6)), { onCorrupt: (r) => reports.push(r) });
    await policy.load();
    assert.deepEqual(policy.summary(), { pinned: 0, withTtl: 0, rules: [] });
    assert.equal(reports.length, 1);
    assert.equal(reports[0]!.file, file);
    assert.equal(reports[0]!.movedTo, `${file}.corrupt-20261202T040506Z`);
    assert.deepEqual((await readdir(dir)).sort(), ['policy.json.corrupt-20261202T040506Z']);
    assert.equal(await readFile(reports[0]!.movedTo!, 'utf8'), '{"pins": ["aa", ');

    await policy.pin(['ab'.repeat(20)]);
    const reloaded = new PagePolicy(file);
    await reloaded.load();
    assert.equal(reloaded.isPinned('ab'.repeat(20)), true, 'the policy is written anew');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a policy.json of the wrong shape is treated as corrupt', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-policy-'));
  try {
    const file = join(dir, 'policy.json');
    await writeFile(file, JSON.stringify({ pins: 'not a list' }));
    const reports: CorruptStateFile[] = [];
    const policy = new PagePolicy(file, new ManualClock(0), { onCorrupt: (r) => reports.push(r) });
    await policy.load();
    assert.equal(reports.length, 1);
    assert.deepEqual(await readdir(dir), [`policy.json.corrupt-19700101T000000Z`]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a change that cannot be saved is undone, reported, and leaves no temp file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-policy-'));
  try {
    const file = join(dir, 'state', 'policy.json');
    await mkdir(join(dir, 'state'));
    const policy = new PagePolicy(file, new ManualClock(0));
    await policy.pin(['aa'.repeat(20)], { mount: 'm', prefix: 'a' });
    await rm(join(dir, 'state'), { recursive: true }); // the next write cannot happen
    await assert.rejects(policy.pin(['bb'.repeat(20)], { mount: 'm', prefix: 'b' }), (err: FanoutError) => err.code === 'INTERNAL' && /not applied/.test(err.message));
    await assert.rejects(policy.setTtl(['aa'.repeat(20)], 1000, { mount: 'm', prefix: 'a' }), /not applied/);
    assert.equal(policy.isPinned('bb'.repeat(20)), false, 'the failed pin is not in force');
    assert.equal(policy.isPinned('aa'.repeat(20)), true, 'earlier pins stay');
    assert.deepEqual(policy.summary(), { pinned: 1, withTtl: 0, rules: [{ mount: 'm', prefix: 'a', pin: true }] });

    await mkdir(join(dir, 'state'));
    await policy.unpin(['aa'.repeat(20)]);
    assert.deepEqual(await readdir(join(dir, 'state')), ['policy.json'], 'saves work again once the directory is back, no temp files');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('temp files of a write interrupted by a crash are removed when the policy is loaded', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-policy-'));
  try {
    const file = join(dir, 'policy.json');
    const policy = new PagePolicy(file, new ManualClock(0));
    await policy.pin(['aa'.repeat(20)]);
    await writeFile(join(dir, '.policy.json.999999.0.tmp'), ''); // a 0-byte leftover of another process
    const reloaded = new PagePolicy(file, new ManualClock(0));
    await reloaded.load();
    assert.equal(reloaded.isPinned('aa'.repeat(20)), true);
    assert.deepEqual(await readdir(dir), ['policy.json']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a policy.json that cannot be read (a directory) fails the start naming the file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-policy-'));
  try {
    const file = join(dir, 'policy.json');
    await mkdir(file);
    await assert.rejects(new PagePolicy(file).load(), (err: FanoutError) => err.code === 'INVALID_CONFIG' && err.message.includes(file) && /EISDIR/.test(err.message));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a pin a rule gives a page is saved before the page is stored: pages stored at once share writes, and a failed save refuses the page', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-policy-'));
  try {
    const file = join(dir, 'policy.json');
    const policy = new PagePolicy(file, new ManualClock(1000));
    await policy.pin([], { mount: 'm', prefix: 'models' });
    const keys = Array.from({ length: 20 }, (_, i) => i.toString(16).padStart(40, '0'));
    await Promise.all(keys.map((key, i) => policy.onStoring(key, 'm', `models/shard-${i}.bin`)));
    const reloaded = new PagePolicy(file, new ManualClock(1000));
    await reloaded.load();
    assert.ok(keys.every((key) => reloaded.isPinned(key)), 'every pin on disk once its onStoring resolved');

    // The file cannot be written (a directory at its name): the page must not be stored, and is not pinned.
    await rm(file);
    await mkdir(join(file, 'held'), { recursive: true });
    const refused = 'ff'.repeat(20);
    await assert.rejects(policy.onStoring(refused, 'm', 'models/late.bin'), (err: FanoutError) => err.code === 'INTERNAL');
    assert.equal(policy.isPinned(refused), false);
    await policy.onStoring('ee'.repeat(20), 'm', 'elsewhere/x.bin'); // no rule covers it: nothing to save
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
