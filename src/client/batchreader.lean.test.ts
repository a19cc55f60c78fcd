import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Member, PageRef } from '../core/types.js';
import { PageFetcher } from '../lib/cluster/pagefetcher.js';
import { FRAME_KIND, batchRequestSchema, endFrame, frameHead } from '../lib/wire/index.js';
import { BatchPageReader } from './batchreader.js';

const PAGE = 64 * 1024;
/** The bytes of file "fN": 64 KiB of N (mod 251), so a page overwritten by another shows it. */
const bytesOf = (ref: PageRef) => Buffer.alloc(ref.size, Number(ref.path.slice(1)) % 251);
const refOf = (n: number): PageRef => ({ mount: 'm', path: `f${n}`, version: 'v', size: PAGE, index: 0 });

/** Batches over the lean page connections (the default transport): pages are views of its read slabs. */
describe('the SDK batch reader on the lean transport', () => {
  let server: Server;
  let member: Member;
  let posts = 0;

  before(async () => {
    server = createServer((req, res) => {
      const body: Buffer[] = [];
      req.on('data', (c: Buffer) => body.push(c));
      req.on('end', () => {
        posts++;
        const { items } = batchRequestSchema.parse(JSON.parse(Buffer.concat(body).toString()));
        res.writeHead(200);
        // Reverse order, in one write: many frames share each socket read.
        const frames: Buffer[] = [];
        for (let at = items.length - 1; at >= 0; at--) {
          const data = bytesOf(items[at]!);
          frames.push(frameHead(at, FRAME_KIND.page, data), data);
        }
        res.end(Buffer.concat([...frames, endFrame(items.length)]));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    member = { id: 'w', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, capacity: 1 };
  });

  after(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  const setup = () => {
    const fetcher = new PageFetcher({ transport: 'socket' });
    const reader = new BatchPageReader({
      pageSize: 1 << 20,
      owners: () => [member],
      headers: () => ({}),
      dispatcher: () => {
        throw new Error('undici must not carry lean batches');
      },
      lean: { post: (m, path, headers, body) => fetcher.post(m, path, headers, body)!, share: (v) => fetcher.share(v), release: (c) => fetcher.release(c) },
      fallback: () => Promise.reject(new Error('no fallback expected')),
      maxItems: 32,
    });
    return { fetcher, reader };
  };

  const fetchAll = (reader: BatchPageReader, from: number, count: number) => Promise.all(Array.from({ length: count }, (_, i) => reader.fetchPage(refOf(from + i))));

  test('pages arrive intact over POSTs on the page connections, as views of the slabs they were read into', async () => {
    const { fetcher, reader } = setup();
    const before = posts;
    const pages = await fetchAll(reader, 0, 100);
    pages.forEach((page, i) => assert.ok(Buffer.concat(page).equals(bytesOf(refOf(i))), `page ${i}`));
    assert.ok(posts - before >= 4, `100 pages in batches of 32: ${posts - before} requests`);
    assert.equal(reader.stats().batched, 100);
    // No copy: a page lies in memory far bigger than itself (a read slab).
    assert.ok(pages.some((page) => page.length === 1 && page[0]!.buffer.byteLength > PAGE));
    await fetcher.close();
  });

  test('pages kept keep their bytes while later batches are read; released ones are read into again', async () => {
    const { fetcher, reader } = setup();
    const kept = await fetchAll(reader, 0, 64);
    const keptMemory = new Set(kept.flatMap((page) => page.map((c) => c.buffer)));
    // Many more batches through the same connections while the first pages are held.
    for (let round = 1; round <= 4; round++) {
      const pages = await fetchAll(reader, round * 64, 64);
      pages.forEach((page, i) => assert.ok(Buffer.concat(page).equals(bytesOf(refOf(round * 64 + i)))));
      for (const page of pages) for (const chunk of page) fetcher.release(chunk);
    }
    kept.forEach((page, i) => assert.ok(Buffer.concat(page).equals(bytesOf(refOf(i))), `held page ${i} was overwritten`));
    for (const page of kept) for (const chunk of page) fetcher.release(chunk);
    // Once given back, their memory is read into again instead of fresh memory.
    const again = await fetchAll(reader, 1000, 128);
    again.forEach((page, i) => assert.ok(Buffer.concat(page).equals(bytesOf(refOf(1000 + i)))));
    assert.ok(again.some((page) => page.some((c) => keptMemory.has(c.buffer))), 'released slabs were not reused');
    await fetcher.close();
  });
});
