import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { FanoutClient, StatResult } from '../client/index.js';
import { FanoutError } from '../core/errors.js';
import { FanoutFs } from './fs.js';
import { ROOT_INO } from './inodes.js';
import { OPS, type FuseAddon, type FuseRequest } from './native.js';
import { OfferedPages, type OfferAddon } from './offered.js';
import { MountPages } from './pages.js';
import { PageSizeFollower, type PageSizeDeps } from './pagesize.js';

const refusal = (own: number, asked: number) => new FanoutError('PAGE_SIZE_MISMATCH', `this worker's pages are ${own} bytes, the request counts pages of ${asked}: every worker of a cluster needs the same pageSize`);

function follower(clusterSizes: number[]) {
  const asked: boolean[] = [];
  const rebuilt: [number, number][] = [];
  const warnings: { fields: Record<string, unknown>; message: string }[] = [];
  const deps: PageSizeDeps = {
    clusterPageSize: async (fresh) => (asked.push(fresh), clusterSizes[Math.min(asked.length, clusterSizes.length) - 1]),
    rebuild: (from, to) => void rebuilt.push([from, to]),
    warn: (fields, message) => void warnings.push({ fields: fields as Record<string, unknown>, message }),
  };
  return { sizes: new PageSizeFollower(1024, deps), asked, rebuilt, warnings };
}

test('a refusal for its page size while the cluster has another rebuilds the mount in it once, however many reads meet it, and says so once', async () => {
  const { sizes, asked, rebuilt, warnings } = follower([2048]);
  await Promise.all([sizes.refused(refusal(2048, 1024), 1024), sizes.refused(refusal(2048, 1024), 1024), sizes.refused(refusal(2048, 1024), 1024)]);
  assert.equal(sizes.pageSize, 2048);
  assert.deepEqual(rebuilt, [[1024, 2048]]);
  assert.deepEqual(asked, [false], 'one look at the cluster for all three');
  assert.equal(warnings.length, 1);
  assert.deepEqual(warnings[0]!.fields, { code: 'PAGE_SIZE_MISMATCH', mountPageSize: 1024, clusterPageSize: 2048 });
  assert.match(warnings[0]!.message, /pageSize changed from 1024 to 2048 bytes/);
  // A read counted in the old size that fails later is read again without another look.
  await sizes.refused(refusal(2048, 1024), 1024);
  assert.deepEqual(asked, [false]);
  assert.equal(warnings.length, 1);
});

test('the cluster answer the session kept is asked again before the refusal is believed', async () => {
  const { sizes, asked, rebuilt } = follower([1024, 4096]);
  await sizes.refused(refusal(4096, 1024), 1024);
  assert.deepEqual(asked, [false, true]);
  assert.deepEqual(rebuilt, [[1024, 4096]]);
});

test('a refusal while the cluster still says the read\'s page size (workers of two sizes) fails the read with the worker\'s words', async () => {
  const { sizes, asked, rebuilt, warnings } = follower([1024, 1024]);
  const err = refusal(2048, 1024);
  await assert.rejects(sizes.refused(err, 1024), (e) => e === err);
  assert.deepEqual(asked, [false, true]);
  assert.deepEqual(rebuilt, []);
  assert.deepEqual(warnings, []);
  assert.equal(sizes.pageSize, 1024);
});

test('other failures are rethrown without a look at the cluster', async () => {
  const { sizes, asked } = follower([2048]);
  const err = new FanoutError('WORKER_UNAVAILABLE', 'down');
  await assert.rejects(sizes.refused(err, 1024), (e) => e === err);
  assert.deepEqual(asked, []);
});

test('a cluster whose page size cannot be learnt leaves the mount as it is and fails the read', async () => {
  const asked: boolean[] = [];
  const sizes = new PageSizeFollower(1024, {
    clusterPageSize: async (fresh) => {
      asked.push(fresh);
      throw new FanoutError('NO_WORKERS', 'none');
    },
    rebuild: () => assert.fail('no rebuild'),
    warn: () => {},
  });
  await assert.rejects(sizes.refused(refusal(2048, 1024), 1024), /pages are 2048/);
  assert.deepEqual(asked, [false]);
  assert.equal(sizes.pageSize, 1024);
});

test('pages of a retired set go back to the slabs: those nobody holds now, the held ones at their release', async () => {
  const released: number[] = [];
  const source = { fetchPage: async (_f: StatResult, index: number) => [Buffer.alloc(10, index)], fetchBatchedPage: async () => [Buffer.alloc(10)], releasePage: (page: Buffer[]) => void released.push(page[0]![0]!) };
  const pages = new MountPages(source, 10, 1 << 20);
  const f: StatResult = { mount: 'data', path: 'a', size: 100, mtimeMs: 1, version: 'v1' };
  (await pages.acquire(f, 1)).release();
  const held = await pages.acquire(f, 2);
  assert.deepEqual(released, [], 'kept while the set is current');
  pages.retire();
  assert.deepEqual(released, [1]);
  held.release();
  assert.deepEqual(released, [1, 2]);
  assert.equal(pages.stats().pages, 0);
});

test('a handle moved to another page size gets another file id; pages are checked against that size, and an addon without per-handle sizes is offered none', () => {
  const handles = new Map<number, [number, number | undefined]>();
  const offers: string[] = [];
  const addon: OfferAddon = {
    offerFile: (_s, fh, fileId, _size, pageSize) => void handles.set(fh, [fileId, pageSize]),
    offer: (_s, fileId, index) => (offers.push(`${fileId}:${index}`), true),
    withdraw: () => true,
    offersPageSizes: true,
  };
  const offered = new OfferedPages(addon, 1024);
  offered.attach({} as never);
  const f: StatResult = { mount: 'data', path: 'a', size: 3000, mtimeMs: 1, version: 'v1' };
  const lease = (bytes: number) => ({ chunks: [Buffer.alloc(bytes)], release() {} });
  const old = offered.open(7, f)!;
  const moved = offered.open(7, f, 2048)!;
  assert.notEqual(moved, old);
  assert.deepEqual(handles.get(7), [moved, 2048], 'the addon plans the handle\'s reads in the new size');
  offered.hold(moved, 0, lease(1024)); // a page of the old size under the new id: not offered
  offered.hold(moved, 1, lease(3000 - 2048));
  offered.hold(old, 0, lease(1024));
  assert.deepEqual(offers, [`${moved}:1`, `${old}:0`]);
  const older = new OfferedPages({ ...addon, offersPageSizes: undefined }, 1024);
  older.attach({} as never);
  assert.equal(older.open(8, f, 2048), undefined);
});

/** A one-file cluster whose page size the test changes; each page reader asks in its own size, as the SDK's does. */
function cluster(data: Buffer, pageSize: number) {
  const state = { pageSize };
  const fetched: string[] = [];
  const released: number[] = [];
  const file = { mount: 'data', path: 'f.bin', size: data.length, mtimeMs: 1000, version: 'v1' };
  const page = (size: number) => async (_f: StatResult, index: number) => {
    fetched.push(`${size}#${index}`);
    await new Promise((r) => setImmediate(r));
    if (size !== state.pageSize) throw refusal(state.pageSize, size);
    return [Buffer.from(data.subarray(index * size, (index + 1) * size))];
  };
  const client = {
    list: async (path: string) => (path === '/' ? [{ name: 'data', type: 'dir' }] : [{ name: 'f.bin', type: 'file', size: file.size, mtimeMs: file.mtimeMs, version: file.version }]),
    stat: async () => file,
    cluster: async () => ({ pageSize: state.pageSize }),
    pageReader: (size: number) => ({ pageSize: size, fetchPage: page(size), fetchBatchedPage: page(size), releasePage: (p: Buffer[]) => void released.push(p[0]!.length) }),
  } as unknown as FanoutClient;
  return { state, client, fetched, released };
}

for (const [from, to] of [[1024, 2048], [2048, 1024]] as const) {
  test(`after the cluster changed its pageSize (${from} → ${to}), reads of open handles are read again in the new size: right bytes, across the old page boundary too`, async () => {
    const data = randomBytes(5000);
    const { state, client, fetched, released } = cluster(data, from);
    // Answers by request: reads answered out of order are told apart.
    const answers = new Map<FuseRequest, { kind: string; args: unknown[] }>();
    const record = (kind: string) => (req: FuseRequest, ...args: unknown[]) => void answers.set(req, { kind, args });
    // replyData says "sent": the read's leases end at once (REPLIED).
    const addon = { replyError: record('error'), replyEntry: record('entry'), replyOpen: record('open'), replyData: (req: FuseRequest, ...args: unknown[]) => (record('data')(req, ...args), true) } as unknown as FuseAddon;
    const warnings: string[] = [];
    const fs = new FanoutFs(addon, client, from, { ttlMs: 60_000, readahead: 0, log: { warn: (_f, message) => void warnings.push(message) } });
    const call = async (op: number, ino: number, a?: number | string, b?: number, c?: number) => {
      const req = {} as FuseRequest;
      fs.dispatch(op, req, ino, a, b, c);
      while (!answers.has(req)) await new Promise((r) => setImmediate(r));
      return answers.get(req)!;
    };
    const read = async (fh: number, offset: number, size: number) => {
      const answer = await call(OPS.READ, ino, fh, offset, size);
      assert.equal(answer.kind, 'data', JSON.stringify(answer.args));
      return Buffer.concat(answer.args[0] as Buffer[]);
    };
    const dataIno = (await call(OPS.LOOKUP, ROOT_INO, 'data')).args[0] as number;
    const ino = (await call(OPS.LOOKUP, dataIno, 'f.bin')).args[0] as number;
    const fh = (await call(OPS.OPEN, ino, 0)).args[0] as number;
    assert.deepEqual(await read(fh, 0, 100), data.subarray(0, 100));
    assert.equal(fs.pageSize, from);

    state.pageSize = to; // the workers restarted
    fetched.length = 0;
    const other = (await call(OPS.OPEN, ino, 0)).args[0] as number;
    // Page 0 of the old size is still kept: a read that takes it together with page 1 would mix sizes.
    const [across, later] = await Promise.all([read(fh, from - 24, 100), read(other, 4000, 1000)]);
    assert.deepEqual(across, data.subarray(from - 24, from + 76));
    assert.deepEqual(later, data.subarray(4000, 5000));
    assert.deepEqual(await read(fh, 0, 100), data.subarray(0, 100), 'a page read before, read again in the new size');
    assert.equal(fs.pageSize, to);
    assert.equal(warnings.filter((m) => m.includes(`pageSize changed from ${from} to ${to} bytes`)).length, 1, 'said once');
    assert.deepEqual(warnings.filter((m) => /failed/.test(m)), [], 'no read failed');
    const firstNew = fetched.findIndex((f) => f.startsWith(`${to}#`));
    assert.ok(firstNew >= 0);
    assert.ok(released.includes(from), 'the pages kept of the old size went back to the slabs');
    assert.deepEqual(fetched.slice(firstNew).filter((f) => f.startsWith(`${from}#`)), [], 'nothing asked in the old size once the mount follows');
  });
}
