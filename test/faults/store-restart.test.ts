import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

/**
 * The page store of a real worker, on its real file system: capacity counts the blocks its page
 * files take (not their bytes), and a restart evicts the pages least recently read, not the ones
 * written longest ago.
 */

interface Status {
  used: number;
  evictions: number;
  pageBytes?: number;
  pages: number;
  capacity: number;
  configuredCapacity: number;
}

async function status(worker: WorkerProcess): Promise<Status> {
  return (await (await fetch(`${worker.url}/v1/status`)).json()) as Status;
}

async function read(worker: WorkerProcess, name: string): Promise<Buffer> {
  const res = await fetch(`${worker.url}/v1/data/data/${name}`);
  assert.equal(res.status, 200, `GET ${name}: ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

/** Every page file under the worker's data directory. */
async function pageFiles(dataDir: string): Promise<string[]> {
  const pages = join(dataDir, 'pages');
  const out: string[] = [];
  for (const shard of await readdir(pages)) for (const name of await readdir(join(pages, shard))) out.push(join(pages, shard, name));
  return out;
}

/** The file system's block size where `dir` is (statfs, as the store reads it). */
const blockSizeOf = (dir: string) => Number(execFileSync('stat', ['-f', '-c', '%S', dir]).toString().trim());

describe('a store of small pages, on disk', () => {
  let source: string;
  let worker: WorkerProcess;
  const count = 1000;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-blocks-src-'));
    for (let i = 0; i < count; i++) await writeFile(join(source, `f${i}.txt`), Buffer.alloc(200, i % 251));
    worker = await WorkerProcess.start({ id: 'blocks', mounts: { data: source }, capacity: '2MiB' });
  });

  after(async () => {
    await worker?.destroy();
    if (source) await rm(source, { recursive: true, force: true });
  });

  test('1000 files of 200 bytes read through a 2 MiB store take at most 2 MiB of disk blocks, and the store counts those blocks', async () => {
    for (let i = 0; i < count; i += 25) await Promise.all(Array.from({ length: 25 }, (_, j) => read(worker, `f${i + j}.txt`)));
    // The last pages land (and evict) after their reads are answered: taken once the store counts what is on disk.
    let files: string[] = [];
    let allocated = 0;
    let s: Status | undefined;
    await waitFor('the store to count the page files on disk', async () => {
      files = await pageFiles(worker.dataDir);
      // What the page files take on disk (st_blocks: 512-byte units), as du counts them.
      allocated = 0;
      for (const file of files) allocated += (await stat(file)).blocks * 512;
      s = await status(worker);
      return s.pages + s.evictions === count && s.pages === files.length && (await pageFiles(worker.dataDir)).length === files.length;
    });
    assert.ok(s);
    const block = blockSizeOf(worker.dataDir);
    console.log(`# ${files.length} page files take ${allocated} bytes on disk (block ${block}); store: used ${s.used}, page bytes ${s.pageBytes}, capacity ${s.capacity}`);
    // The store's directories too (pages/, tmp/ and a shard per key prefix met, up to 256: 1 MiB
    // of a 2 MiB store on ext4), as du counts them.
    const du = Number(execFileSync('du', ['-s', '-B1', join(worker.dataDir, 'pages')]).toString().split(/\s/)[0]) + Number(execFileSync('du', ['-s', '-B1', join(worker.dataDir, 'tmp')]).toString().split(/\s/)[0]);
    assert.ok(du <= s.configuredCapacity, `${du} bytes of the store on disk (${allocated} of page files) in a capacity of ${s.configuredCapacity}`);
    assert.equal(s.pages, files.length);
    assert.equal(allocated, files.length * block, 'each page takes one block');
    assert.equal(s.used, du, 'the store counts what du counts: its page files in whole blocks, and its directories');
    assert.equal(s.pageBytes, files.length * 200, "and the pages' bytes are shown beside");
    assert.ok(s.used <= s.capacity);
  });
});

describe('a worker restarted on its data directory', () => {
  let source: string;
  let worker: WorkerProcess;
  // One page of exactly 16 blocks each (so a store counting bytes and one counting blocks evict
  // alike), large beside the shard directories the store counts too (a block each, one per key
  // prefix met: 3 to 258 blocks, as the keys fall), so that which pages are evicted does not
  // depend on how many there are.
  const size = 16 * 4096;
  const content = (group: string, i: number) => Buffer.alloc(size, `${group}${String(i).padStart(4, '0')}|`);
  const names = (group: string, n: number) => Array.from({ length: n }, (_, i) => `${group}${i}.bin`);

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-lastread-src-'));
    for (const group of ['a', 'b', 'c']) for (let i = 0; i < 100; i++) await writeFile(join(source, `${group}${i}.bin`), content(group, i));
    // 4200 blocks of 4 KiB; eviction from 95 % (3990 blocks) down to 85 % (3570). 200 pages
    // and their shards (3200 + at most 202 blocks) fit under 95 %; 280 (4480 + at least 3) do
    // not; 180 and theirs (2880 + at most 258) fit under 85 %: only b pages are evicted.
    worker = await WorkerProcess.start({ id: 'lastread', mounts: { data: source }, capacity: 4200 * 4096 });
  });

  after(async () => {
    await worker?.destroy();
    if (source) await rm(source, { recursive: true, force: true });
  });

  /** The groups ('a', 'b', 'c') of the pages on disk, by the content of each page file. */
  async function heldByGroup(): Promise<Record<string, number>> {
    const held: Record<string, number> = { a: 0, b: 0, c: 0 };
    for (const file of await pageFiles(worker.dataDir)) {
      const group = (await readFile(file)).subarray(0, 1).toString();
      held[group] = (held[group] ?? 0) + 1;
    }
    return held;
  }

  test('pages written long ago but read before the restart outlive pages written later and never read since', async () => {
    for (const name of [...names('a', 100), ...names('b', 100)]) await read(worker, name);
    await worker.stop();
    // While it is down: the a pages were written two days ago, the b pages one day ago.
    const now = Date.now() / 1000;
    for (const file of await pageFiles(worker.dataDir)) {
      const group = (await readFile(file)).subarray(0, 1).toString();
      const when = now - (group === 'a' ? 2 : 1) * 86_400;
      await utimes(file, when, when);
    }
    await worker.launch();
    // The a pages are read (hits), then the worker is stopped and started again.
    for (const name of names('a', 100)) assert.deepEqual(await read(worker, name), content('a', Number(name.slice(1, -4))));
    await worker.stop();
    await worker.launch();
    assert.deepEqual(await heldByGroup(), { a: 100, b: 100, c: 0 });
    // 80 new pages: 280 pages are past the high watermark, and eviction takes the least recently used.
    for (const name of names('c', 80)) await read(worker, name);
    // The last pages land (and evict) after their reads are answered: each of the 280 is either held or evicted.
    await waitFor('every page stored or evicted', async () => {
      const s = await status(worker);
      return s.pages + s.evictions === 280 && (await pageFiles(worker.dataDir)).length === s.pages;
    });
    const held = await heldByGroup();
    console.log(`# held after the new pages: ${JSON.stringify(held)}`);
    assert.ok(held.b! < 100, `pages were evicted (${JSON.stringify(held)})`);
    assert.equal(held.a, 100, `the pages read before the restart are all kept (${JSON.stringify(held)})`);
    assert.equal(held.c, 80, 'the new pages are kept');
  });
});
