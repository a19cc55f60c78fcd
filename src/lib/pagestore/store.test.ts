import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { PageStore } from './store.js';

async function withStore<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-store-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const page = (fill: number, size = 1000) => Buffer.alloc(size, fill);
const key = (n: number) => n.toString(16).padStart(40, '0');

test('a stored page reads back verified, and survives a restart', () =>
  withStore(async (dir) => {
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000 });
    await store.open();
    await store.put(key(1), page(7), crc32(page(7)));
    const got = await store.get(key(1));
    assert.ok(got);
    assert.deepEqual(got.data, page(7));
    got.release();

    const reopened = new PageStore({ dir, capacity: 1e6, pageSize: 1000 });
    await reopened.open();
    assert.equal(reopened.pageCount, 1);
    assert.equal(reopened.used, 1000);
    assert.deepEqual((await reopened.get(key(1)))?.data, page(7));
  }));

test('a page corrupted on disk is detected, dropped and reported missing', () =>
  withStore(async (dir) => {
    const corrupt: string[] = [];
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000 }, { onCorrupt: (k) => corrupt.push(k) });
    await store.open();
    await store.put(key(2), page(1), crc32(page(1)));
    const file = store.fileOf(key(2))!;
    const bad = page(1);
    bad[500] = 2;
    await writeFile(file, bad);
    assert.equal(await store.get(key(2)), undefined);
    assert.deepEqual(corrupt, [key(2)]);
    assert.equal(store.has(key(2)), false);
    assert.equal(store.used, 0);
  }));

test('a truncated page file is treated as corrupt', () =>
  withStore(async (dir) => {
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000 });
    await store.open();
    await store.put(key(3), page(3), crc32(page(3)));
    await writeFile(store.fileOf(key(3))!, page(3, 10));
    assert.equal(await store.get(key(3)), undefined);
  }));

test('leftovers of interrupted writes are removed on open', () =>
  withStore(async (dir) => {
    await mkdir(join(dir, 'tmp'), { recursive: true });
    await writeFile(join(dir, 'tmp', 'partial'), 'x');
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000 });
    await store.open();
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    assert.equal(store.pageCount, 0);
  }));

test('the store evicts least recently used pages past the high watermark', () =>
  withStore(async (dir) => {
    const store = new PageStore({ dir, capacity: 5000, pageSize: 1000, watermarks: { high: 0.8, low: 0.6 } });
    await store.open();
    for (let i = 0; i < 4; i++) await store.put(key(i), page(i), crc32(page(i)));
    (await store.get(key(0)))?.release(); // page 0 is now the most recently used
    await store.put(key(9), page(9), crc32(page(9)));
    assert.ok(store.used <= 5000 * 0.8);
    assert.ok(store.has(key(0)), 'recently used page kept');
    assert.ok(store.has(key(9)), 'new page kept');
    assert.equal(store.has(key(1)), false, 'oldest page evicted');
    assert.equal(store.evictions, 2);
    const files = (await readdir(join(dir, 'pages'), { recursive: true })).filter((f) => f.includes('.'));
    assert.equal(files.length, store.pageCount, 'evicted pages leave the disk');
  }));
