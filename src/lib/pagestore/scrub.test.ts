import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { ManualClock } from '../../core/clock.js';
import { Scrubber } from './scrub.js';
import { PageStore } from './store.js';

const page = (fill: number, size = 1000) => Buffer.alloc(size, fill);
const key = (n: number) => n.toString(16).padStart(40, '0');

async function withStore<T>(fn: (store: PageStore, corrupted: string[]) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-scrub-'));
  const corrupted: string[] = [];
  try {
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000 }, { onCorrupt: (k) => corrupted.push(k) });
    await store.open();
    return await fn(store, corrupted);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Lets the scrub's file reads (real I/O) run until `done`, moving the clock by `stepMs` between looks (bounded). */
async function until(done: () => boolean, clock?: ManualClock, stepMs = 0): Promise<void> {
  for (let i = 0; i < 2500 && !done(); i++) {
    await new Promise((r) => setTimeout(r, 2));
    if (clock && stepMs > 0) await clock.advance(stepMs);
  }
  assert.ok(done(), 'condition not reached');
}

/** Stops a scrub and waits for it to end (a manual clock's sleeps do not watch the signal: time moves until it ends). */
async function stopScrub(stop: AbortController, done: Promise<void>, clock: ManualClock): Promise<void> {
  let ended = false;
  void done.then(() => (ended = true));
  stop.abort();
  await until(() => ended, clock, 1000);
}

test('the scrub finds a page corrupted on disk, drops it and counts it; intact pages stay', () =>
  withStore(async (store, corrupted) => {
    for (const n of [1, 2, 3]) await store.put(key(n), page(n), crc32(page(n)));
    const bad = page(2);
    bad[10] = 99;
    await writeFile(store.fileOf(key(2))!, bad);
    const clock = new ManualClock();
    const found: string[] = [];
    let bytes = 0;
    const stop = new AbortController();
    const done = new Scrubber(store, { rate: 1000, clock, onScrubbed: (b) => (bytes += b), onCorrupt: (k) => found.push(k) }).run(stop.signal);
    await until(() => found.length === 1 && bytes >= 3000, clock, 1000);
    await stopScrub(stop, done, clock);
    assert.deepEqual(found, [key(2)]);
    assert.deepEqual(corrupted, [key(2)]);
    assert.equal(store.has(key(2)), false);
    assert.ok(store.has(key(1)) && store.has(key(3)));
    assert.ok(bytes >= 3000, `scrubbed ${bytes} bytes`);
  }));

test('the scrub keeps to its rate: a page of S bytes is followed by a pause of S / rate', () =>
  withStore(async (store) => {
    for (const n of [1, 2]) await store.put(key(n), page(n), crc32(page(n)));
    const clock = new ManualClock();
    let pages = 0;
    const stop = new AbortController();
    // 1000-byte pages at 500 bytes/s: one page every 2 s of clock time.
    const done = new Scrubber(store, { rate: 500, clock, onScrubbed: () => pages++ }).run(stop.signal);
    await until(() => pages === 1 && clock.pendingSleeps() === 1);
    await clock.advance(1999);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(pages, 1, 'no second page before 2 s');
    await clock.advance(1);
    await until(() => pages === 2);
    await stopScrub(stop, done, clock);
  }));

test('a page smaller than minPageCost is paced as if it were that big', () =>
  withStore(async (store) => {
    for (const n of [1, 2]) await store.put(key(n), page(n), crc32(page(n)));
    const clock = new ManualClock();
    let pages = 0;
    const stop = new AbortController();
    // 1000-byte pages counted as 4000 bytes at 1000 bytes/s: one page every 4 s, not every 1 s.
    const done = new Scrubber(store, { rate: 1000, minPageCost: 4000, clock, onScrubbed: () => pages++ }).run(stop.signal);
    await until(() => pages === 1 && clock.pendingSleeps() === 1);
    await clock.advance(3999);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(pages, 1, 'no second page before 4 s');
    await clock.advance(1);
    await until(() => pages === 2);
    await stopScrub(stop, done, clock);
  }));

test('a rate of 0 turns the scrub off', () =>
  withStore(async (store) => {
    await store.put(key(1), page(1), crc32(page(1)));
    let pages = 0;
    await new Scrubber(store, { rate: 0, clock: new ManualClock(), onScrubbed: () => pages++ }).run(new AbortController().signal);
    assert.equal(pages, 0);
  }));

test('verify never drops an intact page and says when a page is not stored', () =>
  withStore(async (store, corrupted) => {
    await store.put(key(1), page(1), crc32(page(1)));
    assert.equal(await store.verify(key(1)), 'intact');
    assert.equal(await store.verify(key(9)), 'absent');
    assert.ok(store.has(key(1)));
    assert.deepEqual(corrupted, []);
  }));
