import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FanoutClient, StatResult } from '../client/index.js';
import { FanoutError } from '../core/errors.js';
import type { FileHandle } from 'node:fs/promises';
import { closingAfter, copyFileTo, copyTreeTo, listTree } from './copy.js';

const PAGE = 1024;

/** A cluster stand-in whose pages of a file arrive last first; `failing` pages fail after the others arrived. */
function reverseClient(data: Map<string, Buffer>, failing?: { path: string; index: number }, released: Buffer[][] = []): FanoutClient & { batched: number } {
  const answered = new Map<string, Set<number>>();
  const wake = new Map<string, (() => void)[]>();
  const client = {
    /** Pages asked for through the batch path (tree copies use it for their small pages). */
    batched: 0,
    async fetchBatchedPage(file: StatResult, index: number): Promise<Buffer[]> {
      client.batched++;
      return client.fetchPage(file, index);
    },
    async fetchPage(file: StatResult, index: number): Promise<Buffer[]> {
      const bytes = data.get(file.path)!;
      const pages = Math.ceil(bytes.length / PAGE);
      const done = answered.get(file.path) ?? new Set<number>();
      answered.set(file.path, done);
      while ([...Array(pages).keys()].some((i) => i > index && !done.has(i))) await new Promise<void>((r) => wake.set(file.path, [...(wake.get(file.path) ?? []), r]));
      done.add(index);
      for (const w of wake.get(file.path)?.splice(0) ?? []) w();
      if (failing?.path === file.path && failing.index === index) throw new FanoutError('WORKER_UNAVAILABLE', 'every worker failed');
      return [bytes.subarray(index * PAGE, Math.min(bytes.length, index * PAGE + 100)), bytes.subarray(index * PAGE + 100, (index + 1) * PAGE)];
    },
    releasePage(page: Buffer[]): void {
      released.push(page);
    },
  };
  return client as unknown as FanoutClient & { batched: number };
}

const statOf = (path: string, data: Buffer): StatResult => ({ mount: 'data', path, size: data.length, mtimeMs: 1, version: 'v' });

test('cp writes the exact bytes of a file whose pages arrive last first', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-cp-'));
  try {
    const data = randomBytes(7 * PAGE + 5);
    let progress = 0;
    const released: Buffer[][] = [];
    await copyFileTo(reverseClient(new Map([['a.bin', data]]), undefined, released), statOf('a.bin', data), join(dir, 'a.bin'), PAGE, { window: 8, onBytes: (n) => (progress += n) });
    assert.deepEqual(await readFile(join(dir, 'a.bin')), data);
    assert.equal(progress, data.length);
    assert.equal(released.length, 8, 'every page given back once written');
    assert.deepEqual(await readdir(dir), ['a.bin'], 'no temporary file left');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a cp whose page fails leaves neither the file nor its temporary', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-cp-'));
  try {
    const data = randomBytes(4 * PAGE);
    await assert.rejects(
      copyFileTo(reverseClient(new Map([['a.bin', data]]), { path: 'a.bin', index: 0 }), statOf('a.bin', data), join(dir, 'a.bin'), PAGE, { window: 4 }),
      (err: unknown) => err instanceof FanoutError && err.code === 'WORKER_UNAVAILABLE',
    );
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/**
 * A cluster whose workers restarted with pages of 3 × PAGE after the copy's pages 0 and 1: later
 * pages counted in PAGE are refused; byte reads (which follow the new size) give `span`'s bytes.
 */
function resizedClient(data: Buffer, span: (start: number, end: number) => Buffer[]): FanoutClient & { ranges: [number, number][] } {
  const refusal = () => new FanoutError('PAGE_SIZE_MISMATCH', `this worker's pages are ${3 * PAGE} bytes, the request counts pages of ${PAGE}`);
  const client = {
    ranges: [] as [number, number][],
    async fetchPage(_file: StatResult, index: number): Promise<Buffer[]> {
      if (index >= 2) throw refusal();
      return [data.subarray(index * PAGE, (index + 1) * PAGE)];
    },
    async fetchBatchedPage(): Promise<Buffer[]> {
      throw refusal();
    },
    async *readPages(_file: StatResult, options: { start: number; end: number }): AsyncGenerator<Buffer[]> {
      client.ranges.push([options.start, options.end]);
      yield span(options.start, options.end);
    },
    releasePage(): void {},
  };
  return client as unknown as FanoutClient & { ranges: [number, number][] };
}

test('a cp under way when the cluster’s page size changes reads the pages refused for their size by range, and writes the exact bytes', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-cp-'));
  try {
    const data = randomBytes(5 * PAGE + 7);
    const client = resizedClient(data, (start, end) => [data.subarray(start, start + 10), data.subarray(start + 10, end)]);
    await copyFileTo(client, statOf('a.bin', data), join(dir, 'a.bin'), PAGE, { window: 1 });
    assert.deepEqual(await readFile(join(dir, 'a.bin')), data);
    assert.deepEqual(client.ranges, [[2 * PAGE, 3 * PAGE], [3 * PAGE, 4 * PAGE], [4 * PAGE, 5 * PAGE], [5 * PAGE, 5 * PAGE + 7]], 'each refused page, as the bytes the copy places it by');
    // A tree's small file (its one page in a batch) too.
    const small = randomBytes(PAGE - 3);
    const tree = resizedClient(small, (start, end) => [small.subarray(start, end)]);
    await copyTreeTo(tree, { files: [{ file: statOf('s.bin', small), rel: 's.bin' }], dirs: [] }, join(dir, 'tree'), PAGE);
    assert.deepEqual(await readFile(join(dir, 'tree', 's.bin')), small);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a tree copy writes every file whole, and a failing file stops it without a partial file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-cp-'));
  try {
    const data = new Map<string, Buffer>();
    const files = [];
    for (let i = 0; i < 100; i++) {
      const path = `t/d${i % 5}/f${i}.bin`;
      data.set(path, randomBytes(1 + ((i * 211) % (3 * PAGE))));
      files.push({ rel: `d${i % 5}/f${i}.bin`, file: statOf(path, data.get(path)!) });
    }
    const tree = { files, dirs: ['d0', 'd1', 'd2', 'd3', 'd4'] };
    const client = reverseClient(data);
    await copyTreeTo(client, tree, join(dir, 'copy'), PAGE);
    assert.ok(client.batched > 0, 'the tree copy asked for its small pages in batches');
    for (const { rel, file } of files) assert.deepEqual(await readFile(join(dir, 'copy', rel)), data.get(file.path));

    const broken = reverseClient(data, { path: 't/d3/f3.bin', index: 0 });
    await assert.rejects(copyTreeTo(broken, tree, join(dir, 'again'), PAGE), (err: unknown) => err instanceof FanoutError && err.code === 'WORKER_UNAVAILABLE');
    const left = (await readdir(join(dir, 'again'), { recursive: true })) as string[];
    assert.ok(!left.includes(join('d3', 'f3.bin')), 'the failed file is not there');
    assert.deepEqual(left.filter((name) => name.includes('.fanout-')), [], 'no temporary file left');
    for (const name of left.filter((n) => n.endsWith('.bin'))) assert.deepEqual(await readFile(join(dir, 'again', name)), data.get(`t/${name.split(join('/')).join('/')}`));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a failed write is the error reported even when the close fails too; a failed close alone is reported', async () => {
  const failingClose = () => {
    const handle = {
      closed: 0,
      async close() {
        handle.closed++;
        throw Object.assign(new Error('EIO on close'), { code: 'EIO' });
      },
    };
    return handle;
  };
  const first = failingClose();
  await assert.rejects(
    closingAfter(first as unknown as FileHandle, '/x', () => Promise.reject(new FanoutError('DISK_FULL', 'no space left writing /x'))),
    (err: FanoutError) => err.code === 'DISK_FULL',
  );
  assert.equal(first.closed, 1);
  const second = failingClose();
  await assert.rejects(closingAfter(second as unknown as FileHandle, '/x', async () => {}), (err: FanoutError) => err.code === 'INTERNAL' && /EIO on close/.test(err.message));
  assert.equal(second.closed, 1);
});

test('a listing that never ends (a worker naming directories in a loop) fails the tree copy at a bound instead of walking for ever', async () => {
  let lists = 0;
  const looping = { list: async () => (lists++, [{ name: 'd', type: 'dir' }, { name: 'e', type: 'dir' }]) } as unknown as FanoutClient;
  await assert.rejects(listTree(looping, '/data/tree', { maxEntries: 1000 }), (err: FanoutError) => err.code === 'INVALID_ARGUMENT' && /more than 1000 files and directories/.test(err.message));
  assert.ok(lists <= 1000, String(lists));
  // Depth first or not, a path past PATH_MAX fails too.
  const deep = { list: async () => [{ name: 'd'.repeat(250), type: 'dir' }] } as unknown as FanoutClient;
  await assert.rejects(listTree(deep, '/data/tree'), (err: FanoutError) => err.code === 'INVALID_PATH' && /longer than 4096/.test(err.message));
});

test('an interrupted listing ends at the next directory with the reason of the abort, however much is left to walk', async () => {
  const interrupted = new AbortController();
  let lists = 0;
  // An endless tree: each listing names two more directories; the third listing is interrupted.
  const endless = { list: async () => (++lists === 3 && interrupted.abort(new FanoutError('ABORTED', 'interrupted (SIGINT)')), [{ name: 'd', type: 'dir' }, { name: 'e', type: 'dir' }]) } as unknown as FanoutClient;
  await assert.rejects(listTree(endless, '/data/tree', { signal: interrupted.signal, maxEntries: 10_000 }), (err: FanoutError) => err.code === 'ABORTED' && /SIGINT/.test(err.message));
  assert.ok(lists < 3 + 8, `listings after the interrupt: ${lists - 3}`);
});
