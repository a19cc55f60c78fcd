import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rename, rm, symlink, utimes, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { ManualClock } from '../../core/clock.js';
import type { FanoutError } from '../../core/errors.js';
import { diskReserve, effectiveCapacity } from './capacity.js';
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
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await store.open();
    await store.put(key(1), page(7), crc32(page(7)));
    const got = await store.get(key(1));
    assert.ok(got);
    assert.deepEqual(got.data, page(7));
    got.release();

    const reopened = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await reopened.open();
    assert.equal(reopened.pageCount, 1);
    assert.equal(reopened.used, 1000);
    assert.deepEqual((await reopened.get(key(1)))?.data, page(7));
  }));

test('a page corrupted on disk is detected, dropped and reported missing', () =>
  withStore(async (dir) => {
    const corrupt: string[] = [];
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 }, { onCorrupt: (k) => corrupt.push(k) });
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
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await store.open();
    await store.put(key(3), page(3), crc32(page(3)));
    await writeFile(store.fileOf(key(3))!, page(3, 10));
    assert.equal(await store.get(key(3)), undefined);
  }));

/**
 * Stores pages 4, 5 and 6 (their bytes, or page `bytesOf`'s), then puts a directory, a symlink to
 * `<dir>/elsewhere.bin` and a FIFO at their files' names. Returns each page's file.
 */
async function putOddEntriesAtPageNames(store: PageStore, dir: string, bytesOf?: number): Promise<Map<number, string>> {
  const target = join(dir, 'elsewhere.bin');
  await writeFile(target, page(9));
  const replace: [number, (file: string) => Promise<void>][] = [
    [4, async (file) => mkdir(file)],
    [5, async (file) => symlink(target, file)],
    [6, async (file) => void execFileSync('mkfifo', [file])],
  ];
  const files = new Map<number, string>();
  for (const [n, put] of replace) {
    const data = page(bytesOf ?? n);
    await store.put(key(n), data, crc32(data));
    const file = store.fileOf(key(n))!;
    files.set(n, file);
    await rm(file);
    await put(file);
  }
  return files;
}

test("a directory, a symlink or a FIFO at a page's name is a corrupt page, dropped (was INTERNAL on every read until a restart; a FIFO hung a thread)", () =>
  withStore(async (dir) => {
    const corrupt: string[] = [];
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 }, { onCorrupt: (k) => corrupt.push(k) });
    await store.open();
    await putOddEntriesAtPageNames(store, dir, 9);
    assert.equal(await store.get(key(4)), undefined);
    assert.equal((await store.openForSend(key(5)))?.fd, undefined);
    assert.equal(await store.verify(key(6)), 'corrupt');
    assert.deepEqual(corrupt, [key(4), key(5), key(6)]);
    assert.equal(store.used, 0);
    // Whatever sat at the names is gone: the pages can be stored there again.
    for (const n of [4, 5, 6]) {
      await store.put(key(n), page(n), crc32(page(n)));
      assert.deepEqual((await store.get(key(n)))?.data, page(n));
    }
  }));

test("a directory, a symlink or a FIFO at a page's name found at a restart is removed, so the page can be stored there again (a directory made every later store of the page fail with EISDIR)", () =>
  withStore(async (dir) => {
    const first = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await first.open();
    const files = await putOddEntriesAtPageNames(first, dir);
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await store.open();
    assert.equal(store.used, 0);
    for (const n of files.keys()) {
      assert.equal(store.has(key(n)), false);
      await store.put(key(n), page(n), crc32(page(n)));
      assert.equal(store.fileOf(key(n)), files.get(n));
      assert.deepEqual((await store.get(key(n)))?.data, page(n));
    }
    assert.deepEqual(await readFile(join(dir, 'elsewhere.bin')), page(9)); // a link's target is left alone
  }));

test('pinned pages never grow the store past its capacity: a page with no room left beside them is not stored (STORE_FULL), unpinned pages still are', () =>
  withStore(async (dir) => {
    const pinned = new Set([key(20), key(21), key(22)]);
    const failures: string[] = [];
    const store = new PageStore({ dir, capacity: 3000, pageSize: 1000, blockSize: 1, canEvict: (k) => !pinned.has(k) }, { onWriteFailure: (reason) => failures.push(reason) });
    await store.open();
    for (const k of pinned) await store.put(k, page(7), crc32(page(7)));
    await assert.rejects(store.put(key(23), page(8), crc32(page(8))), (err: FanoutError) => err.code === 'STORE_FULL' && /pinned/.test(err.message));
    assert.deepEqual(failures, ['no_room']);
    assert.equal(store.used, 3000);
    assert.equal(store.has(key(23)), false);
    pinned.delete(key(20));
    await store.put(key(23), page(8), crc32(page(8)));
    assert.equal(store.has(key(23)), true);
    assert.ok(store.used <= 3000, String(store.used));
  }));

test('a restart rebuilds the index from the page files: every page counted, in the LRU order of their mtimes (writes, or reads recorded)', () =>
  withStore(async (dir) => {
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await store.open();
    // 60 pages in 12 shards (a key's first two characters), written in an order unlike their
    // names' (the scan stats a shard's files at once).
    const sharded = (n: number) => `${(n % 12).toString(16).padStart(2, '0')}${n.toString(16).padStart(38, '0')}`;
    const order = Array.from({ length: 60 }, (_, i) => sharded((i * 37) % 60));
    for (const [i, k] of order.entries()) {
      await store.put(k, page(i + 1), crc32(page(i + 1)));
      const when = new Date(1_700_000_000_000 + i * 1000);
      await utimes(store.fileOf(k)!, when, when);
    }
    const reopened = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await reopened.open();
    assert.equal(reopened.pageCount, 60);
    assert.equal(reopened.used, 60_000);
    assert.equal((await readdir(join(dir, 'pages'))).length, 12);
    assert.deepEqual(reopened.keys(), order, 'LRU order: the mtime order');
  }));

test('leftovers of interrupted writes are removed on open', () =>
  withStore(async (dir) => {
    await mkdir(join(dir, 'tmp'), { recursive: true });
    await writeFile(join(dir, 'tmp', 'partial'), 'x');
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await store.open();
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    assert.equal(store.pageCount, 0);
  }));

test('the store evicts least recently used pages past the high watermark', () =>
  withStore(async (dir) => {
    const store = new PageStore({ dir, capacity: 5000, pageSize: 1000, blockSize: 1, watermarks: { high: 0.8, low: 0.6 } });
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

async function waitUntil(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(condition(), `timed out waiting for ${what}`);
}

/** A file system of `total` bytes of which `others` are used by someone else, plus the store's pages. */
function fakeDisk(total: number, others: () => number, store: () => PageStore | undefined) {
  let calls = 0;
  return {
    get calls() {
      return calls;
    },
    statDisk: async () => {
      calls++;
      return { total, free: Math.max(0, total - others() - (store()?.used ?? 0)) };
    },
  };
}

test('a configured capacity above what the disk holds is lowered to it, and eviction starts from there', () =>
  withStore(async (dir) => {
    let store: PageStore | undefined;
    // 100 kB file system: reserve 10% (10 kB), so the store may hold 90 kB, not the 10 MB configured.
    const disk = fakeDisk(100_000, () => 0, () => store);
    store = new PageStore({ dir, capacity: 10_000_000, pageSize: 1000, blockSize: 1, statDisk: disk.statDisk, clock: new ManualClock(0) });
    await store.open();
    assert.equal(store.configuredCapacity, 10_000_000);
    assert.equal(store.capacity, 90_000);
    assert.equal(store.diskFree, 100_000);
    for (let i = 0; i < 120; i++) await store.put(key(i), page(i % 256), crc32(page(i % 256)));
    assert.ok(store.evictions > 0, 'eviction started');
    assert.ok(store.used <= 90_000 * 0.95, `store holds ${store.used} bytes, within the disk`);
    assert.ok(store.has(key(119)), 'the newest page is kept');
    assert.equal(store.writeFailures, 0);
  }));

test('free space is re-read once the check interval has passed on the clock, and other writers shrink the store', () =>
  withStore(async (dir) => {
    let store: PageStore | undefined;
    let others = 0;
    const clock = new ManualClock(0);
    const disk = fakeDisk(100_000, () => others, () => store);
    const evicted: number[] = [];
    store = new PageStore(
      { dir, capacity: 10_000_000, pageSize: 1000, blockSize: 1, statDisk: disk.statDisk, clock, diskCheckIntervalMs: 5000 },
      { onEvict: (count) => evicted.push(count) },
    );
    await store.open();
    for (let i = 0; i < 50; i++) await store.put(key(i), page(1), crc32(page(1)));
    const checks = disk.calls;
    await store.put(key(50), page(1), crc32(page(1)));
    assert.equal(disk.calls, checks, 'no statfs before the interval has passed');
    assert.equal(store.capacity, 90_000);

    others = 40_000; // another program writes 40 kB
    const stop = new AbortController();
    const watching = store.watchDisk(stop.signal);
    await clock.advance(5000);
    assert.equal(store.capacity, 50_000, '51 kB held + 9 kB free - 10 kB reserve');
    assert.ok(store.used <= 50_000 * 0.95, `eviction gave room back without any write (${store.used} bytes held)`);
    await waitUntil(() => evicted.length > 0, 'the evicted files to be deleted');
    stop.abort();
    await clock.advance(5000);
    await watching;
  }));

test('a page write that finds the disk full evicts, is retried once, and leaves no temp file', () =>
  withStore(async (dir) => {
    let failNext = 0;
    const failures: string[] = [];
    const store = new PageStore(
      {
        dir,
        capacity: 1e6,
        pageSize: 1000, blockSize: 1,
        statDisk: async () => ({ total: 1e9, free: 1e9 }),
        writeFile: async (file, data) => {
          if (failNext > 0) {
            failNext--;
            await writeFile(file, data.subarray(0, 100)); // a partial temp file, as a full disk leaves
            throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          }
          await writeFile(file, data);
        },
      },
      { onWriteFailure: (reason) => failures.push(reason) },
    );
    await store.open();
    for (let i = 0; i < 10; i++) await store.put(key(i), page(i), crc32(page(i)));
    failNext = 1;
    await store.put(key(10), page(10), crc32(page(10)));
    assert.ok(store.has(key(10)), 'stored on the retry');
    assert.deepEqual(failures, ['disk_full']);
    assert.ok(store.evictions > 0, 'room was made before the retry');
    assert.ok(store.capacity <= 10_000, `capacity lowered to what the disk held (${store.capacity})`);
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);

    failNext = 2;
    await assert.rejects(store.put(key(11), page(11), crc32(page(11))), (err: FanoutError) => err.code === 'DISK_FULL');
    assert.equal(store.has(key(11)), false);
    assert.deepEqual(failures, ['disk_full', 'disk_full', 'disk_full']);
    assert.deepEqual(await readdir(join(dir, 'tmp')), [], 'no temp file left after a failed retry');
    assert.deepEqual((await store.get(key(10)))?.data, page(10), 'pages stored before still read back');
  }));

test('a page write failing for another reason is reported as an I/O error and not retried', () =>
  withStore(async (dir) => {
    const failures: string[] = [];
    let writes = 0;
    const store = new PageStore(
      {
        dir,
        capacity: 1e6,
        pageSize: 1000, blockSize: 1,
        statDisk: async () => ({ total: 1e9, free: 1e9 }),
        writeFile: async () => {
          writes++;
          throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
        },
      },
      { onWriteFailure: (reason) => failures.push(reason) },
    );
    await store.open();
    await assert.rejects(store.put(key(1), page(1), crc32(page(1))), (err: FanoutError) => err.code === 'INTERNAL');
    assert.equal(writes, 1);
    assert.deepEqual(failures, ['io_error']);
  }));

test('the disk reserve is 5% with a floor of min(1 GiB, 10%) and a ceiling of 32 GiB', () => {
  const GiB = 1024 ** 3;
  assert.equal(diskReserve(24 * 1024 ** 2), 0.1 * 24 * 1024 ** 2);
  assert.equal(diskReserve(10 * GiB), GiB);
  assert.equal(diskReserve(100 * GiB), 5 * GiB);
  assert.equal(diskReserve(4096 * GiB), 32 * GiB);
  assert.equal(effectiveCapacity(10 * GiB, 0, { total: 24 * 1024 ** 2, free: 20 * 1024 ** 2 }), Math.floor(20 * 1024 ** 2 - 0.1 * 24 * 1024 ** 2));
  assert.equal(effectiveCapacity(GiB, 0, { total: 1000 * GiB, free: 900 * GiB }), GiB, 'a disk bigger than configured changes nothing');
  assert.equal(effectiveCapacity(GiB, 0, { total: 100, free: 0 }), 0, 'never below zero');
});

test('openForSend gives the page file, length and checksum without reading it, once verified', () =>
  withStore(async (dir) => {
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await store.open();
    await store.put(key(5), page(9), crc32(page(9)));
    const file = await store.openForSend(key(5));
    assert.ok(file);
    assert.equal(file.size, 1000);
    assert.equal(file.crc, crc32(page(9)));
    assert.deepEqual(await readFile(`/proc/self/fd/${file.fd}`), page(9));
    await file.close();
    assert.equal(await store.openForSend(key(6)), undefined);
  }));

test('openForSend checks a page after a restart and after its file is written: a corrupt page is dropped, not sent', () =>
  withStore(async (dir) => {
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 });
    await store.open();
    await store.put(key(7), page(3), crc32(page(3)));
    await store.put(key(8), page(4), crc32(page(4)));
    const bad = page(3);
    bad[10] = 0;
    await writeFile(store.fileOf(key(7))!, bad);

    const corrupt: string[] = [];
    const reopened = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1 }, { onCorrupt: (k) => corrupt.push(k) });
    await reopened.open();
    assert.equal(await reopened.openForSend(key(7)), undefined);
    assert.deepEqual(corrupt, [key(7)]);
    assert.equal(reopened.has(key(7)), false);
    const good = await reopened.openForSend(key(8));
    assert.ok(good);
    await good.close();
    // Checked once; a write to the file afterwards makes it checked again, and dropped.
    await writeFile(reopened.fileOf(key(8))!, page(5));
    assert.equal(await reopened.openForSend(key(8)), undefined);
    assert.deepEqual(corrupt, [key(7), key(8)]);
  }));

/** An open store of 1000-byte pages holding page `n` (filled with `n`). */
async function storeHolding(dir: string, n: number, options: { keptSendFiles?: number } = {}): Promise<PageStore> {
  const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1, ...options });
  await store.open();
  await store.put(key(n), page(n), crc32(page(n)));
  return store;
}

test('openForSend keeps a hot page file open between sends, and lets it go when the page leaves', () =>
  withStore(async (dir) => {
    const store = await storeHolding(dir, 9);
    const first = (await store.openForSend(key(9)))!;
    await first.close();
    const second = (await store.openForSend(key(9)))!;
    assert.equal(second.fd, first.fd, 'the same descriptor, not opened again');
    assert.equal(store.openSendFiles, 1);
    // Deleted while a send uses it: the send still reads the page, the descriptor closes after it.
    await store.delete(key(9));
    assert.equal(store.openSendFiles, 0);
    assert.deepEqual(await readFile(`/proc/self/fd/${second.fd}`), page(9));
    await second.close();
    assert.equal(await store.openForSend(key(9)), undefined);
  }));

test('openForSend sends the file now at the page name, not a kept one it replaced', () =>
  withStore(async (dir) => {
    const store = await storeHolding(dir, 10);
    await (await store.openForSend(key(10)))!.close();
    // Renamed over with the same size and mtime (as silent corruption would look): not checked
    // again, but the file sent is the one at the name, so its reader sees what is on disk.
    const file = store.fileOf(key(10))!;
    await writeFile(`${file}.new`, page(6));
    execFileSync('touch', ['-r', file, `${file}.new`]); // to the nanosecond, which utimes() rounds
    await rename(`${file}.new`, file);
    const sent = (await store.openForSend(key(10)))!;
    assert.deepEqual(await readFile(`/proc/self/fd/${sent.fd}`), page(6));
    await sent.close();
  }));

test('openForSend keeps at most its limit of idle page files open', () =>
  withStore(async (dir) => {
    const store = await storeHolding(dir, 20, { keptSendFiles: 2 });
    await (await store.openForSend(key(20)))!.close();
    for (let n = 21; n < 25; n++) {
      await store.put(key(n), page(n), crc32(page(n)));
      await (await store.openForSend(key(n)))!.close();
    }
    assert.equal(store.openSendFiles, 2);
    store.closeSendFiles();
    assert.equal(store.openSendFiles, 0);
  }));

test('capacity counts whole file-system blocks: a store of 200-byte pages holds what fits in its capacity on disk, not 20 times that', () =>
  withStore(async (dir) => {
    // 40 KiB of capacity (the blocks of 10 pages of 4 KiB blocks); 100 pages of 200 bytes are 20 KB of bytes.
    const store = new PageStore({ dir, capacity: 40 * 1024, pageSize: 1000, blockSize: 4096 });
    await store.open();
    for (let i = 0; i < 100; i++) await store.put(key(i), page(i, 200), crc32(page(i, 200)));
    assert.ok(store.pageCount <= 10, `${store.pageCount} pages of 4 KiB blocks in a 40 KiB store`);
    assert.equal(store.used, store.pageCount * 4096, 'each page counts as a whole block');
    assert.equal(store.pageBytes, store.pageCount * 200, 'and its bytes as they are');
    assert.ok(store.used <= store.capacity);

    // A restart counts the files it finds the same way, and evicts to fit (a smaller capacity).
    const reopened = new PageStore({ dir, capacity: 16 * 1024, pageSize: 1000, blockSize: 4096 });
    await reopened.open();
    assert.ok(reopened.used <= 16 * 1024 * 0.95, `${reopened.used} bytes counted in a 16 KiB store after the restart`);
    assert.equal(reopened.used, reopened.pageCount * 4096);
  }));

/** What du counts for `paths` (their blocks, directories included), in bytes. */
function duBytes(...paths: string[]): number {
  return execFileSync('du', ['-s', '-B1', ...paths])
    .toString()
    .trim()
    .split('\n')
    .reduce((sum, line) => sum + Number(line.split(/\s+/)[0]), 0);
}

test("used counts the store's directories too, as du does: pages spread over 16 shards, and eviction keeps what du counts within the capacity", () =>
  withStore(async (dir) => {
    // 16 shards (the key's first two characters), 200-byte pages of one block each.
    const spread = (n: number) => `${(n % 16).toString(16)}0${n.toString(16).padStart(38, '0')}`;
    const capacity = 256 * 1024;
    const store = new PageStore({ dir, capacity, pageSize: 1000 });
    await store.open();
    for (let n = 0; n < 100; n++) await store.put(spread(n), page(n, 200), crc32(page(n, 200)));
    const du = duBytes(join(dir, 'pages'), join(dir, 'tmp'));
    // Before: used counted the page files only, 72 KiB (pages/, tmp/ and 16 shards of 4 KiB on ext4)
    // short of du, and eviction let du reach 312 KiB of a 256 KiB store.
    assert.equal(store.used, du, `used ${store.used}, du ${du}`);
    assert.ok(du <= capacity, `du ${du} of a ${capacity}-byte store`);
    assert.ok(store.pageCount > 0);
    const last = await store.get(spread(99));
    assert.deepEqual(last?.data, page(99, 200));
    last?.release();

    // A restart counts the directories it finds, once each.
    const reopened = new PageStore({ dir, capacity, pageSize: 1000 });
    await reopened.open();
    assert.equal(reopened.used, duBytes(join(dir, 'pages'), join(dir, 'tmp')));
    await reopened.put(spread(100), page(100, 200), crc32(page(100, 200)));
    assert.equal(reopened.used, duBytes(join(dir, 'pages'), join(dir, 'tmp')));
  }));

test("the block size is the file system's when not given (statfs), 4096 if it cannot be read", async () => {
  const { fileSystemBlockSize, onDisk } = await import('./capacity.js');
  const dir = await mkdtemp(join(tmpdir(), 'fanout-store-'));
  try {
    const expected = Number(execFileSync('stat', ['-f', '-c', '%S', dir]).toString().trim());
    assert.equal(await fileSystemBlockSize(dir), expected);
    assert.equal(await fileSystemBlockSize(join(dir, 'missing')), 4096);
    assert.deepEqual([onDisk(0, 4096), onDisk(1, 4096), onDisk(4096, 4096), onDisk(4097, 4096)], [0, 4096, 4096, 8192]);
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000 });
    await store.open();
    await store.put(key(1), page(1, 300), crc32(page(1, 300)));
    assert.equal(store.pageCount, 1);
    // Its page as one block, and the store's directories as du counts them.
    assert.equal(store.used, duBytes(join(dir, 'pages'), join(dir, 'tmp')));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a restart evicts by last read, not by write: a page written long ago and read lately outlives pages written lately and never read', () =>
  withStore(async (dir) => {
    const clock = new ManualClock(1_800_000_000_000);
    const options = { dir, capacity: 10_000, pageSize: 1000, blockSize: 1, watermarks: { high: 0.95, low: 0.5 }, clock, readMarkIntervalMs: 60_000 };
    const store = new PageStore(options);
    await store.open();
    for (let i = 0; i < 8; i++) {
      await store.put(key(i), page(i), crc32(page(i)));
      // Page i written at hour i of the day before: page 0 the oldest write.
      const when = (1_800_000_000_000 - 86_400_000 + i * 3_600_000) / 1000;
      await utimes(store.fileOf(key(i))!, when, when);
    }
    const reopened = new PageStore(options);
    await reopened.open();
    assert.deepEqual(reopened.keys(), [0, 1, 2, 3, 4, 5, 6, 7].map(key), 'written order before any read');
    // Pages 0 and 1, the oldest writes, are read; the reads are recorded by the flush (the disk watch's tick).
    (await reopened.get(key(0)))?.release();
    await (await reopened.openForSend(key(1)))?.close();
    assert.equal(reopened.queuedReadMarks, 2);
    await reopened.flushReadMarks(-1);
    assert.equal(reopened.queuedReadMarks, 2, 'a flush out of time leaves its marks to the next one');
    await reopened.flushReadMarks();
    assert.equal(reopened.queuedReadMarks, 0);

    // Restarted with room for half of them: the pages never read since their writes go first.
    const small = new PageStore({ ...options, capacity: 4_400 });
    await small.open();
    assert.ok(small.has(key(0)) && small.has(key(1)), `the pages read last are kept (kept: ${small.keys().map((k) => parseInt(k, 16))})`);
    assert.equal(small.has(key(2)), false, 'the oldest page never read is evicted');
  }));

test('a page read again and again records its read once per interval, and a checked page stays checked', () =>
  withStore(async (dir) => {
    const clock = new ManualClock(1_800_000_000_000);
    const store = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1, clock, readMarkIntervalMs: 60_000 });
    await store.open();
    await store.put(key(1), page(1), crc32(page(1)));
    const old = (1_800_000_000_000 - 3_600_000) / 1000;
    await utimes(store.fileOf(key(1))!, old, old);
    const reopened = new PageStore({ dir, capacity: 1e6, pageSize: 1000, blockSize: 1, clock, readMarkIntervalMs: 60_000 });
    await reopened.open();
    for (let i = 0; i < 100; i++) (await reopened.get(key(1)))?.release();
    assert.equal(reopened.queuedReadMarks, 1, 'queued once, not per read');
    await reopened.flushReadMarks();
    const { stat } = await import('node:fs/promises');
    assert.equal((await stat(reopened.fileOf(key(1))!)).mtimeMs, 1_800_000_000_000, "the file's mtime is the read's time");
    // Within the interval, reads queue nothing; past it, one more mark.
    await clock.advance(30_000);
    (await reopened.get(key(1)))?.release();
    assert.equal(reopened.queuedReadMarks, 0);
    await clock.advance(31_000);
    await reopened.flushReadMarks();
    (await reopened.get(key(1)))?.release();
    assert.equal(reopened.queuedReadMarks, 1);

    // A page checked by openForSend and then marked keeps its kept descriptor: no read again.
    const sent = (await reopened.openForSend(key(1)))!;
    await sent.close();
    await reopened.flushReadMarks();
    const again = (await reopened.openForSend(key(1)))!;
    assert.equal(again.fd, sent.fd, 'the kept file, still trusted after its mtime was set');
    await again.close();
    reopened.closeSendFiles();
  }));
