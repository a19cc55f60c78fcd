import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StatResult } from '../client/index.js';
import type { FuseSession } from './native.js';
import { OfferedPages, type OfferAddon } from './offered.js';
import type { Lease } from './pages.js';
import { FileReader, type PageSource } from './reader.js';

const PAGE = 1024;
const file = (path: string, size: number, version = 'v1'): StatResult => ({ mount: 'data', path, size, mtimeMs: 5, version });

/** A fake addon: what is offered, and which withdrawn pages a FUSE thread is still "writing from". */
function fakeAddon() {
  const offered = new Map<string, number>(); // "fileId:index" -> offerId
  const handles = new Map<number, number>(); // fh -> fileId
  const busy = new Set<string>();
  const withdrawn: string[] = [];
  const addon: OfferAddon = {
    offerFile: (_s, fh, fileId) => void handles.set(fh, fileId),
    offer: (_s, fileId, index, _chunks, offerId) => {
      if (offered.has(`${fileId}:${index}`)) return false;
      offered.set(`${fileId}:${index}`, offerId);
      return true;
    },
    withdraw: (_s, fileId, index) => {
      const key = `${fileId}:${index}`;
      withdrawn.push(key);
      offered.delete(key);
      return !busy.has(key);
    },
  };
  return { addon, offered, handles, busy, withdrawn };
}

function lease(bytes: number, log: string[], name: string): Lease {
  return { chunks: [Buffer.alloc(bytes / 2), Buffer.alloc(bytes - bytes / 2)], release: () => void log.push(name) };
}

test('readers of one file share an offer, and the page is withdrawn and released only when the last lets go', () => {
  const { addon, offered, withdrawn } = fakeAddon();
  const pages = new OfferedPages(addon, PAGE);
  pages.attach({} as FuseSession);
  const f = file('a.bin', 3 * PAGE);
  const id = pages.open(1, f)!;
  assert.equal(pages.open(2, f), id, 'the same version is one file id');
  const released: string[] = [];
  const a = pages.hold(id, 0, lease(PAGE, released, 'a'));
  const b = pages.hold(id, 0, lease(PAGE, released, 'b'));
  assert.deepEqual([...offered.keys()], [`${id}:0`]);
  a.release();
  a.release(); // twice: nothing more
  assert.deepEqual(released, ['a'], "the first reader's lease goes back; the other still keeps the bytes alive");
  assert.deepEqual(withdrawn, []);
  b.release();
  assert.deepEqual(withdrawn, [`${id}:0`]);
  assert.deepEqual(released, ['a', 'b']);
  assert.deepEqual(pages.counts(), { offers: 0, returning: 0, files: 1 });
});

test('a page withdrawn while a FUSE thread writes from it keeps its lease until the addon returns it', () => {
  const { addon, busy } = fakeAddon();
  const pages = new OfferedPages(addon, PAGE);
  pages.attach({} as FuseSession);
  const id = pages.open(1, file('a.bin', 2 * PAGE))!;
  const released: string[] = [];
  const held = pages.hold(id, 1, lease(PAGE, released, 'page1'));
  busy.add(`${id}:1`);
  held.release();
  assert.deepEqual(released, [], 'the buffers are still being written to the kernel');
  assert.equal(pages.counts().returning, 1);
  pages.returned([999, 1]); // an unknown id is ignored
  assert.deepEqual(released, ['page1']);
  assert.equal(pages.counts().returning, 0);
});

test('a page whose bytes are not the whole page is not offered (its reads still come to JavaScript)', () => {
  const { addon, offered } = fakeAddon();
  const pages = new OfferedPages(addon, PAGE);
  pages.attach({} as FuseSession);
  const id = pages.open(1, file('a.bin', PAGE + 100))!;
  const released: string[] = [];
  const short = lease(PAGE - 2, released, 'short');
  assert.equal(pages.hold(id, 0, short), short);
  const last = pages.hold(id, 1, lease(100, released, 'last')); // the short last page is whole
  assert.deepEqual([...offered.keys()], [`${id}:1`]);
  last.release();
  assert.deepEqual(released, ['last']);
});

test('without a session, or with an addon that cannot offer, nothing is offered', () => {
  const pages = new OfferedPages({}, PAGE);
  pages.attach({} as FuseSession);
  assert.equal(pages.enabled, false);
  assert.equal(pages.open(1, file('a.bin', PAGE)), undefined);
  const released: string[] = [];
  const l = lease(PAGE, released, 'x');
  assert.equal(pages.hold(1, 0, l), l);
});

test('a closed file version gets a new id when opened again', () => {
  const { addon } = fakeAddon();
  const pages = new OfferedPages(addon, PAGE);
  pages.attach({} as FuseSession);
  const f = file('a.bin', PAGE);
  const first = pages.open(1, f);
  pages.close(f);
  assert.equal(pages.counts().files, 0);
  assert.notEqual(pages.open(2, f), first);
  assert.notEqual(pages.open(3, file('a.bin', PAGE, 'v2')), pages.open(4, f), 'another version is another file');
});

test("a reader's window offers the pages it fetches ahead, and reads answered by the addon move it", async () => {
  const { addon, offered, withdrawn } = fakeAddon();
  const pages = new OfferedPages(addon, PAGE);
  pages.attach({} as FuseSession);
  const f = file('a.bin', 10 * PAGE);
  const id = pages.open(1, f)!;
  const released: number[] = [];
  const source: PageSource = {
    acquire: async (_file, index) => ({ chunks: [Buffer.alloc(PAGE, index)], release: () => void released.push(index) }),
  };
  const reader = new FileReader(f, source, PAGE, 4, (index, l) => pages.hold(id, index, l));
  const settle = () => new Promise((r) => setTimeout(r, 5));
  const first = await reader.read(0, PAGE);
  for (const l of first.leases) l.release();
  await settle();
  assert.ok(offered.size >= 1, 'the window is offered');
  // The addon answers reads further on; the window follows them: pages behind are withdrawn,
  // pages ahead fetched and offered.
  for (let index = 1; index <= 8; index++) {
    reader.served(index * PAGE, PAGE);
    await settle();
  }
  assert.ok(offered.has(`${id}:9`), 'the last page is offered ahead of its read');
  assert.ok(withdrawn.includes(`${id}:0`) && withdrawn.includes(`${id}:5`), 'pages read past are withdrawn');
  assert.ok(!offered.has(`${id}:0`));
  reader.close();
  await settle();
  assert.equal(offered.size, 0, 'closing withdraws every offer');
  assert.deepEqual(pages.counts().offers, 0);
});
