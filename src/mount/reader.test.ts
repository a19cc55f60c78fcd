import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StatResult } from '../client/index.js';
import { FanoutError } from '../core/errors.js';
import { MountPages } from './pages.js';
import { ByteBudget } from '../lib/transfer/index.js';
import { FileReader, type PageSource } from './reader.js';
import { ReadRoom } from './readroom.js';

const PAGE = 10;
const content = Buffer.from(Array.from({ length: 95 }, (_, i) => i));
const file: StatResult = { mount: 'data', path: 'f.bin', size: content.length, mtimeMs: 0, version: 'v1' };

/**
 * Pages of `content`, in two chunks each, through the mount's real page leases; records which
 * pages were fetched and which were given back to the receive memory.
 */
function source(fail: (index: number) => boolean = () => false): PageSource & { asked: number[]; batched: number[]; released: number[]; pages: MountPages } {
  const asked: number[] = [];
  const batched: number[] = [];
  const released: number[] = [];
  const fetchPage = async (_file: StatResult, index: number): Promise<Buffer[]> => {
    asked.push(index);
    if (fail(index)) throw new FanoutError('WORKER_UNAVAILABLE', `page ${index} failed`);
    const page = Buffer.from(content.subarray(index * PAGE, (index + 1) * PAGE));
    return [page.subarray(0, 3), page.subarray(3)];
  };
  const pages = new MountPages(
    {
      fetchPage,
      fetchBatchedPage(file, index) {
        batched.push(index);
        return fetchPage(file, index);
      },
      releasePage(page) {
        released.push(page[0]![0]! / PAGE);
      },
    },
    PAGE,
    0, // nothing kept once unleased: every release shows
  );
  return { asked, batched, released, pages, acquire: (f, index, batch) => pages.acquire(f, index, batch) };
}

/** A read's bytes, its leases released as the mount does once the reply is sent. */
const read = async (reader: FileReader, offset: number, length: number) => {
  const { chunks, leases } = await reader.read(offset, length);
  const bytes = Buffer.concat(chunks);
  for (const lease of leases) lease.release();
  return bytes;
};

test('reads return exactly the bytes asked for, across page boundaries and clipped at the end', async () => {
  const reader = new FileReader(file, source(), PAGE, 0);
  assert.deepEqual(await read(reader, 7, 25), content.subarray(7, 32));
  assert.deepEqual(await read(reader, 90, 50), content.subarray(90, 95));
  assert.equal((await read(reader, 95, 10)).length, 0);
  assert.equal((await read(reader, 500, 10)).length, 0);
});

test('a sequential reader gets pages fetched ahead, in a window that grows to the limit', async () => {
  const pages = source();
  const reader = new FileReader(file, pages, PAGE, 3);
  await read(reader, 0, 5);
  assert.deepEqual(pages.asked, [0], 'one read is not yet a pattern');
  await read(reader, 5, 5);
  await read(reader, 10, 10);
  await read(reader, 20, 10);
  assert.deepEqual([...new Set(pages.asked)].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5]);
  // Reads that arrive slightly out of order (the kernel keeps several in flight) stay sequential.
  await read(reader, 40, 10);
  await read(reader, 30, 10);
  assert.ok(pages.asked.includes(7), 'the window moved on');
  assert.equal(new Set(pages.asked).size, pages.asked.length, 'no page was fetched twice');
});

test('random reads fetch only the pages they touch', async () => {
  const pages = source();
  const reader = new FileReader(file, pages, PAGE, 2);
  for (const offset of [80, 10, 50, 0, 30]) await read(reader, offset, 5);
  assert.deepEqual(pages.asked, [8, 1, 5, 0, 3]);
});

test('a failed page fails its read, and the next read retries it', async () => {
  let failures = 1;
  const pages = source((index) => index === 2 && failures-- > 0);
  const reader = new FileReader(file, pages, PAGE, 0);
  await assert.rejects(read(reader, 20, 5), /page 2 failed/);
  assert.deepEqual(await read(reader, 20, 5), content.subarray(20, 25));
});

test('every page is given back to the receive memory once its reads are sent and the window has moved on', async () => {
  const pages = source();
  const reader = new FileReader(file, pages, PAGE, 2);
  const first = await reader.read(0, 10);
  await read(reader, 10, 10);
  await read(reader, 20, 10);
  await read(reader, 30, 10);
  assert.ok(!pages.released.includes(0), 'page 0 is still being sent: not given back');
  for (const lease of first.leases) lease.release();
  assert.ok(pages.released.includes(0), 'sent and behind the window: given back');
  assert.equal(first.chunks.length > 0 && Buffer.concat(first.chunks).equals(content.subarray(0, 10)), true);
  reader.close();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual([...pages.released].sort((a, b) => a - b), [...new Set(pages.asked)].sort((a, b) => a - b), 'every page fetched is given back once');
  assert.equal(pages.pages.stats().pages, 0);
});

test('a failed page gives back the other pages of its read', async () => {
  const pages = source((index) => index === 1);
  const reader = new FileReader(file, pages, PAGE, 0);
  await assert.rejects(reader.read(5, 10), /page 1 failed/);
  reader.close();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(pages.released, [0]);
});

test('the first page fetched at open rides in a batch, and the first read joins it; later pages go alone', async () => {
  const pages = source();
  const reader = new FileReader(file, pages, PAGE, 2);
  reader.start();
  assert.deepEqual(await read(reader, 0, 10), content.subarray(0, 10));
  await read(reader, 10, 10);
  await read(reader, 20, 10);
  assert.deepEqual(pages.batched, [0], 'only the page asked for at open was batched');
  assert.equal(pages.asked.filter((index) => index === 0).length, 1, 'the read joined the fetch at open');
  reader.close();
});

test('first pages held for opened, unread files are bounded mount-wide; past the bound they are only fetched ahead', async () => {
  const budget = new ByteBudget(2 * PAGE);
  const prefetched: string[] = [];
  const pages = source();
  const withPrefetch: PageSource = { acquire: pages.acquire, prefetch: (f, index) => void prefetched.push(`${f.path}#${index}`) };
  const readers = ['a', 'b', 'c', 'd'].map((name) => new FileReader({ ...file, path: `${name}.bin` }, withPrefetch, PAGE, 4, undefined, { starts: budget }));
  for (const reader of readers.slice(0, 3)) reader.start();
  assert.equal(budget.inUse, 2 * PAGE, 'two first pages held');
  assert.deepEqual(prefetched, ['c.bin#0'], 'the third only fetched ahead');
  assert.equal((await readers[0]!.read(0, 5)).chunks.length > 0, true);
  assert.equal(budget.inUse, PAGE, 'a file being read holds its page in its window, no longer against the bound');
  readers[3]!.start();
  assert.deepEqual(prefetched, ['c.bin#0'], 'room again: the fourth holds its first page');
  readers[1]!.close();
  readers[3]!.close();
  assert.equal(budget.inUse, 0, 'closed unread files give theirs back');
  for (const reader of readers) reader.close();
});

test('pages fetched ahead are bounded over all readers: past the allowance they read ahead less, and every read is still answered', async () => {
  const ahead = new ByteBudget(3 * PAGE);
  const pages = source();
  const readers = ['a', 'b'].map((name) => new FileReader({ ...file, path: `${name}.bin` }, pages, PAGE, 4, undefined, { ahead }));
  for (let offset = 0; offset < 40; offset += 5) {
    for (const reader of readers) {
      const read = await reader.read(offset, 5);
      assert.deepEqual(Buffer.concat(read.chunks), content.subarray(offset, offset + 5));
      for (const lease of read.leases) lease.release();
      assert.ok(ahead.inUse <= 3 * PAGE, `${ahead.inUse} bytes ahead, at most ${3 * PAGE}`);
      // Each reader holds its read's page and the one behind it; beyond those, 3 pages ahead in all (8 without the allowance).
      assert.ok(pages.pages.stats().pages <= 2 * 2 + 3, `${pages.pages.stats().pages} pages held`);
    }
  }
  assert.ok(ahead.inUse > 0, 'the readers did read ahead');
  for (const reader of readers) reader.close();
  assert.equal(ahead.inUse, 0, 'closed readers give back what they held ahead');
});

/**
 * Pages of `content` whose fetches wait until the test lets them finish (finishOne), through the
 * mount's real page leases; `peakHeld` is the most bytes of leased pages seen at any fetch.
 */
function gatedSource(cacheBytes = 0) {
  const waiting: (() => void)[] = [];
  let peakHeld = 0;
  let fetches = 0;
  const heldBytes = () => {
    const { pages: all, idlePages } = pages.stats();
    return (all - idlePages) * PAGE;
  };
  const fetchPage = (_file: StatResult, index: number): Promise<Buffer[]> => {
    fetches++;
    peakHeld = Math.max(peakHeld, heldBytes());
    return new Promise((resolve) => waiting.push(() => resolve([Buffer.from(content.subarray(index * PAGE, (index + 1) * PAGE))])));
  };
  const pages = new MountPages({ fetchPage, fetchBatchedPage: fetchPage, releasePage() {} }, PAGE, cacheBytes);
  const source: PageSource = { acquire: (f, index, batch) => pages.acquire(f, index, batch), has: (f, index) => pages.has(f, index) };
  return {
    source,
    pages,
    get peakHeld() {
      return peakHeld;
    },
    get fetches() {
      return fetches;
    },
    finishOne: () => waiting.shift()?.(),
    get waiting() {
      return waiting.length;
    },
  };
}

/** Turns of the event loop, enough for every settled promise's continuation to run. */
const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
};

/** Lets the gated fetches finish one at a time until `reads` all settle; fails if they stop making progress. */
async function drive(gated: ReturnType<typeof gatedSource>, reads: Promise<unknown>[]): Promise<void> {
  let settled = false;
  const all = Promise.all(reads).finally(() => (settled = true));
  for (let idle = 0; !settled; ) {
    await turns(2);
    if (gated.waiting > 0) {
      gated.finishOne();
      idle = 0;
    } else if (++idle > 100) {
      assert.fail('reads stopped making progress with no fetch in flight (deadlock)');
    }
  }
  await all;
}

/** A read as the mount answers it: the bytes checked, then (the reply sent) its pages and room given back. */
const readAndSend = async (reader: FileReader, offset: number, length: number) => {
  const result = await reader.read(offset, length);
  assert.deepEqual(Buffer.concat(result.chunks), content.subarray(offset, Math.min(content.length, offset + length)), `${reader.file.path} @${offset}`);
  await turns(1); // the reply is in flight a while
  for (const lease of result.leases) lease.release();
  result.room?.();
};

test('pages reads fetch themselves are bounded mount-wide: more concurrent reads of distinct pages than the bound wait their turn, and all get their bytes', async () => {
  const gated = gatedSource();
  const reads = new ReadRoom(3 * PAGE);
  const readers = Array.from({ length: 12 }, (_, i) => new FileReader({ ...file, path: `f${i}.bin` }, gated.source, PAGE, 0, undefined, { reads }));
  // Every reader at its own page (an mmap'ed index looked up by many processes): 12 pages wanted at once.
  await drive(gated, readers.map((reader, i) => readAndSend(reader, (i % 9) * PAGE + 3, 4)));
  assert.ok(gated.peakHeld <= 3 * PAGE, `${gated.peakHeld} bytes of pages held at once, bound ${3 * PAGE}`);
  assert.equal(gated.fetches, 12);
  assert.equal(reads.inUse, 0, 'every read gave its room back');
  for (const reader of readers) reader.close();
});

test('a read spanning two pages takes room for both at once, so reads waiting for room never hold part of it (no deadlock)', async () => {
  const gated = gatedSource();
  const reads = new ReadRoom(3 * PAGE);
  const readers = Array.from({ length: 8 }, (_, i) => new FileReader({ ...file, path: `f${i}.bin` }, gated.source, PAGE, 0, undefined, { reads }));
  await drive(gated, readers.map((reader, i) => readAndSend(reader, (i % 8) * PAGE + 5, PAGE)));
  assert.ok(gated.peakHeld <= 3 * PAGE, `${gated.peakHeld} bytes of pages held at once, bound ${3 * PAGE}`);
  assert.equal(reads.inUse, 0);
});

test('a read of pages already in memory (held by another read, or kept) costs no room, and does not wait', async () => {
  const gated = gatedSource(4 * PAGE);
  const reads = new ReadRoom(PAGE);
  const first = new FileReader(file, gated.source, PAGE, 0, undefined, { reads });
  const holding = first.read(20, 5);
  await turns(2);
  gated.finishOne();
  const held = await holding;
  assert.equal(reads.inUse, PAGE, 'the first read holds the whole bound until its reply is sent');
  // Another open of the same file reads the same page: it joins, though no room is left.
  const second = new FileReader(file, gated.source, PAGE, 0, undefined, { reads });
  const joined = second.read(22, 3);
  const winner = await Promise.race([joined.then(() => 'read'), turns(20).then(() => 'waiting')]);
  assert.equal(winner, 'read');
  const result = await joined;
  assert.deepEqual(Buffer.concat(result.chunks), content.subarray(22, 25));
  assert.equal(result.room, undefined);
  for (const lease of [...held.leases, ...result.leases]) lease.release();
  held.room?.();
  // Kept with no lease (--cache): a later read finds it without room or a fetch.
  const hold = await reads.budget.acquire(PAGE);
  const kept = await second.read(20, 2);
  assert.deepEqual(Buffer.concat(kept.chunks), content.subarray(20, 22));
  assert.equal(gated.fetches, 1);
  for (const lease of kept.leases) lease.release();
  hold();
});

test('a failed fetch gives its room back, and the next read goes ahead', async () => {
  const reads = new ReadRoom(PAGE);
  let failing = true;
  const pages = new MountPages(
    {
      async fetchPage(_file, index) {
        if (failing) throw new FanoutError('WORKER_UNAVAILABLE', `page ${index} failed`);
        return [Buffer.from(content.subarray(index * PAGE, (index + 1) * PAGE))];
      },
      fetchBatchedPage: () => Promise.reject(new Error('not batched')),
      releasePage() {},
    },
    PAGE,
    0,
  );
  const reader = new FileReader(file, { acquire: (f, i) => pages.acquire(f, i), has: (f, i) => pages.has(f, i) }, PAGE, 0, undefined, { reads });
  await assert.rejects(reader.read(30, 5), /page 3 failed/);
  assert.equal(reads.inUse, 0);
  failing = false;
  const result = await reader.read(30, 5);
  assert.deepEqual(Buffer.concat(result.chunks), content.subarray(30, 35));
  result.room?.();
  for (const lease of result.leases) lease.release();
});

test('a read larger than the whole bound still goes (alone), and the reads behind it follow', async () => {
  const gated = gatedSource();
  const reads = new ReadRoom(PAGE / 2);
  const readers = Array.from({ length: 3 }, (_, i) => new FileReader({ ...file, path: `f${i}.bin` }, gated.source, PAGE, 0, undefined, { reads }));
  await drive(gated, readers.map((reader) => readAndSend(reader, 5, 3 * PAGE)));
  assert.ok(gated.peakHeld <= 4 * PAGE, `${gated.peakHeld} bytes held: one read's 4 pages at a time`);
  assert.equal(reads.inUse, 0);
});

test('the window keeps a read\'s page only within the ahead allowance: open files read once and left open do not each hold a page', async () => {
  const gated = gatedSource();
  const ahead = new ByteBudget(2 * PAGE);
  const reads = new ReadRoom(2 * PAGE);
  const readers = Array.from({ length: 6 }, (_, i) => new FileReader({ ...file, path: `f${i}.bin` }, gated.source, PAGE, 4, undefined, { ahead, reads }));
  await drive(gated, readers.map((reader) => readAndSend(reader, 50, 4)));
  const { pages, idlePages } = gated.pages.stats();
  assert.ok(pages - idlePages <= 2, `${pages - idlePages} pages still held by 6 idle open files (ahead allowance: 2)`);
  for (const reader of readers) reader.close();
  await turns(1);
  assert.equal(ahead.inUse, 0);
  assert.equal(gated.pages.stats().pages, 0);
});

test('an interrupted read stops waiting for its page at once; the fetch goes on for another reader of the page, and the room comes back when it ends', async () => {
  const gated = gatedSource();
  const reads = new ReadRoom(3 * PAGE);
  const interrupted = new FileReader(file, gated.source, PAGE, 0, undefined, { reads });
  const other = new FileReader(file, gated.source, PAGE, 0, undefined, { reads });
  const interrupt = new AbortController();
  const stopped = interrupted.read(21, 4, interrupt.signal);
  await turns(2);
  const joined = other.read(23, 5); // joins the fetch in flight: no room of its own
  await turns(2);
  assert.equal(gated.fetches, 1, 'both reads wait for one fetch of page 2');
  interrupt.abort();
  const outcome = await Promise.race([stopped.then(() => 'answered', (err: FanoutError) => err.code), turns(20).then(() => 'still waiting')]);
  assert.equal(outcome, 'ABORTED');
  assert.equal(reads.inUse, PAGE, 'the fetch still in flight stays counted');
  gated.finishOne();
  const result = await joined;
  assert.deepEqual(Buffer.concat(result.chunks), content.subarray(23, 28));
  for (const lease of result.leases) lease.release();
  await turns(2);
  assert.equal(reads.inUse, 0, 'the interrupted read gave its room back once its page arrived');
  const { pages, idlePages } = gated.pages.stats();
  assert.equal(pages - idlePages, 0, 'and its lease');
});

test('an interrupted read waiting for room leaves the queue holding nothing; the reads behind it go on', async () => {
  const gated = gatedSource();
  const reads = new ReadRoom(PAGE);
  const readers = Array.from({ length: 3 }, (_, i) => new FileReader({ ...file, path: `f${i}.bin` }, gated.source, PAGE, 0, undefined, { reads }));
  const first = readAndSend(readers[0]!, 5, 2);
  const interrupt = new AbortController();
  const queued = readers[1]!.read(15, 2, interrupt.signal);
  const behind = readAndSend(readers[2]!, 25, 2);
  await turns(2);
  assert.equal(gated.fetches, 1, 'one read has the room, two wait for it');
  interrupt.abort();
  const outcome = await Promise.race([queued.then(() => 'answered', (err: FanoutError) => err.code), turns(20).then(() => 'still waiting')]);
  assert.equal(outcome, 'ABORTED');
  await drive(gated, [first, behind]);
  assert.equal(gated.fetches, 2, 'the interrupted read fetched nothing');
  assert.equal(reads.inUse, 0);
});

test('10,000 files opened past the first-pages allowance start a bounded number of first-page fetches, not one each', async () => {
  const gated = gatedSource(0);
  const starts = new ByteBudget(PAGE);
  const readers = Array.from({ length: 10_000 }, (_, i) => new FileReader({ ...file, path: `f${i}.bin` }, gated.pages, PAGE, 0, undefined, { starts }));
  for (const reader of readers) reader.start();
  await turns(2);
  assert.equal(gated.fetches, 1 + 64, 'the one first page the allowance holds, and 64 prefetches in flight');
  // The read of a file whose prefetch was dropped fetches its page itself.
  const last = readers[5000]!;
  const reading = last.read(0, 4);
  await turns(2);
  assert.equal(gated.fetches, 66);
  await drive(gated, [reading]);
  for (const reader of readers) reader.close();
});

test('two reads of one page starting at once take room for it once: a read of another page fetches at once', async () => {
  const gated = gatedSource();
  const reads = new ReadRoom(2 * PAGE);
  // Two opens of one file (two processes), and a third file.
  const [a, b, c] = ['x.bin', 'x.bin', 'y.bin'].map((path) => new FileReader({ ...file, path }, gated.source, PAGE, 0, undefined, { reads }));
  const both = [readAndSend(a!, 3, 4), readAndSend(b!, 5, 4)];
  await turns(4);
  assert.equal(reads.inUse, PAGE, 'one page on its way holds room once');
  const other = readAndSend(c!, PAGE + 1, 4);
  await turns(4);
  assert.equal(gated.waiting, 2, 'the read of another page is fetching, not waiting for room');
  await drive(gated, [...both, other]);
  assert.equal(reads.inUse, 0);
});

test('a read of a page another read waits for room for waits for that room, takes none, and is answered with it', async () => {
  const gated = gatedSource();
  const reads = new ReadRoom(PAGE);
  const hold = await reads.budget.acquire(PAGE); // the bound is in use: reads queue
  const [a, b] = ['x.bin', 'x.bin'].map((path) => new FileReader({ ...file, path }, gated.source, PAGE, 0, undefined, { reads }));
  const both = Promise.all([a!.read(3, 4), b!.read(5, 4)]);
  await turns(4);
  hold();
  await turns(4);
  assert.equal(reads.inUse, PAGE, 'room for the page once');
  assert.equal(gated.waiting, 1);
  gated.finishOne();
  const answered = await Promise.race([both.then(() => 'both'), turns(20).then(() => 'waiting')]);
  assert.equal(answered, 'both', 'the second read does not wait for the first to give its room back');
  for (const result of await both) {
    for (const lease of result.leases) lease.release();
    result.room?.();
  }
  assert.equal(reads.inUse, 0);
});

test('when the read that waits for room for a page is interrupted, a read that joined its wait takes the room itself', async () => {
  const gated = gatedSource();
  const reads = new ReadRoom(PAGE);
  const hold = await reads.budget.acquire(PAGE);
  const [a, b] = ['x.bin', 'x.bin'].map((path) => new FileReader({ ...file, path }, gated.source, PAGE, 0, undefined, { reads }));
  const interrupt = new AbortController();
  const first = a!.read(3, 4, interrupt.signal);
  const second = readAndSend(b!, 5, 4);
  await turns(4);
  interrupt.abort();
  await assert.rejects(first, { code: 'ABORTED' });
  hold();
  await drive(gated, [second]);
  assert.equal(gated.fetches, 1);
  assert.equal(reads.inUse, 0);
});
