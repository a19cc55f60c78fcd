import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants as os } from 'node:os';
import type { FanoutClient } from '../client/index.js';
import { ManualClock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import { errnoFor } from './errno.js';
import { FanoutFs, direntPlusSize } from './fs.js';
import { ROOT_INO } from './inodes.js';
import { OPS, type FuseAddon, type FuseRequest } from './native.js';

const { errno } = os;

/** An addon that records answers instead of talking to the kernel. */
function fakeAddon() {
  const answers: { kind: string; args: unknown[] }[] = [];
  const record = (kind: string) => (_req: FuseRequest, ...args: unknown[]) => void answers.push({ kind, args });
  const addon = {
    replyError: record('error'),
    replyEntry: record('entry'),
    replyAttr: record('attr'),
    replyOpen: record('open'),
    replyData: record('data'),
    replyDir: record('dir'),
    replyDirPlus: record('dirplus'),
    replyStatfs: record('statfs'),
  } as unknown as FuseAddon;
  return { addon, answers };
}

/** Dispatches one request to `fs` and waits for its answer. */
function caller(fs: FanoutFs, answers: { kind: string; args: unknown[] }[]) {
  return async (op: number, ino: number, a?: number | string, b?: number, c?: number) => {
    const before = answers.length;
    fs.dispatch(op, {} as FuseRequest, ino, a, b, c);
    while (answers.length === before) await new Promise((r) => setImmediate(r));
    return answers[answers.length - 1]!;
  };
}

const content = Buffer.from('hello fanout\n');
const client = {
  async list(path: string) {
    if (path === '/') return [{ name: 'data', type: 'dir' }];
    if (path === '/data') return [{ name: 'broken', type: 'dir' }, { name: 'hello.txt', type: 'file', size: content.length, mtimeMs: 1000, version: 'v1' }];
    throw new FanoutError('WORKER_UNAVAILABLE', 'cannot reach fanout at http://x');
  },
  async stat(path: string) {
    if (path === '/data/hello.txt') return { mount: 'data', path: 'hello.txt', size: content.length, mtimeMs: 1000, version: 'v1' };
    throw new FanoutError('NOT_FOUND', 'missing');
  },
  async fetchPage() {
    return [content];
  },
  releasePage() {},
  /** Every page size served alike: following a page size change is pagesize.test.ts's. */
  pageReader() {
    return this;
  },
} as unknown as FanoutClient;

function setup() {
  const { addon, answers } = fakeAddon();
  const warnings: string[] = [];
  const fs = new FanoutFs(addon, client, 1024, { ttlMs: 1000, readahead: 2, log: { warn: (_f, message) => warnings.push(message) } });
  const call = caller(fs, answers);
  return { call, warnings, fs };
}

test('lookup, getattr, open and read answer a file of a mount; writes are refused', async () => {
  const { call } = setup();
  const mount = await call(OPS.LOOKUP, ROOT_INO, 'data');
  assert.equal(mount.kind, 'entry');
  const dataIno = mount.args[0] as number;
  const file = await call(OPS.LOOKUP, dataIno, 'hello.txt');
  const [ino, mode, size] = file.args as number[];
  assert.equal(mode, 0o100444);
  assert.equal(size, content.length);
  assert.deepEqual((await call(OPS.GETATTR, ino!)).args.slice(1, 3), [0o100444, content.length]);
  assert.deepEqual(await call(OPS.OPEN, ino!, 1 /* O_WRONLY */), { kind: 'error', args: [errno.EROFS] });
  const opened = await call(OPS.OPEN, ino!, 0);
  assert.equal(opened.kind, 'open');
  const data = await call(OPS.READ, ino!, opened.args[0] as number, 6, 100);
  assert.equal(Buffer.concat(data.args[0] as Buffer[]).toString(), 'fanout\n');
});

test('a missing name is a negative entry; a dead cluster is EIO with a log line', async () => {
  const { call, warnings } = setup();
  const dataIno = (await call(OPS.LOOKUP, ROOT_INO, 'data')).args[0] as number;
  const missing = await call(OPS.LOOKUP, dataIno, 'nope');
  assert.equal(missing.kind, 'entry');
  assert.equal(missing.args[0], 0, 'inode 0: the kernel caches the absence');
  assert.deepEqual(await call(OPS.GETATTR, 424242), { kind: 'error', args: [errno.ENOENT] });
  assert.equal(warnings.length, 0, 'missing paths are no news');
  const broken = (await call(OPS.LOOKUP, dataIno, 'broken')).args[0] as number;
  assert.deepEqual(await call(OPS.LOOKUP, broken, 'x'), { kind: 'error', args: [errno.EIO] });
  assert.deepEqual(warnings, ['lookup /data/broken failed: EIO']);
});

test('a listing with attributes makes its entries known inodes, one kernel reference each, and only the entries that fit', async () => {
  const { call, fs } = setup();
  const dataIno = (await call(OPS.LOOKUP, ROOT_INO, 'data')).args[0] as number;
  const dir = await call(OPS.OPENDIR, dataIno);
  const fh = dir.args[0] as number;
  // Room for ".", ".." and "broken" only (160 + 160 + 160 bytes).
  const part = await call(OPS.READDIRPLUS, dataIno, fh, 0, 480);
  assert.equal(part.kind, 'dirplus');
  assert.equal(part.args[0], 480, 'exactly the bytes of the entries that fit');
  const full = await call(OPS.READDIRPLUS, dataIno, fh, 3, 4096);
  const [size, offset, names, inos, modes, sizes] = full.args as [number, number, string[], number[], number[], number[]];
  assert.equal(offset, 3);
  assert.equal(size, direntPlusSize('hello.txt'));
  assert.equal(names[3], 'hello.txt');
  assert.equal(modes[3], 0o100444);
  assert.equal(sizes[3], content.length);
  // The kernel holds the entry now: getattr and read need no lookup first.
  const ino = inos[3]!;
  assert.deepEqual((await call(OPS.GETATTR, ino)).args.slice(1, 3), [0o100444, content.length]);
  const opened = await call(OPS.OPEN, ino, 0);
  const data = await call(OPS.READ, ino, opened.args[0] as number, 0, 100);
  assert.equal(Buffer.concat(data.args[0] as Buffer[]).toString(), content.toString());
  await call(OPS.RELEASE, ino, opened.args[0] as number);
  // One reference, forgotten once: the inode is gone.
  fs.dispatch(OPS.FORGET, undefined as unknown as FuseRequest, ino, 1);
  assert.deepEqual(await call(OPS.GETATTR, ino), { kind: 'error', args: [errno.ENOENT] });
});

test('the pages of a read are given back once the kernel has its bytes: at once when sent at once, else on REPLIED', async () => {
  for (const sentAtOnce of [false, true]) {
    const { addon, answers } = fakeAddon();
    (addon as { replyData: unknown }).replyData = (_req: FuseRequest, chunks: Buffer[], token: number) => {
      answers.push({ kind: 'data', args: [chunks, token] });
      return sentAtOnce;
    };
    const released: string[] = [];
    const pagesClient = { ...client, releasePage: (page: Buffer[]) => released.push(page[0]!.toString()) } as unknown as FanoutClient;
    const fs = new FanoutFs(addon, pagesClient, 1024, { ttlMs: 1000, readahead: 2, cacheBytes: 0, log: { warn: () => {} } });
    const call = caller(fs, answers);
    const dataIno = (await call(OPS.LOOKUP, ROOT_INO, 'data')).args[0] as number;
    const ino = (await call(OPS.LOOKUP, dataIno, 'hello.txt')).args[0] as number;
    const fh = (await call(OPS.OPEN, ino, 0)).args[0] as number;
    const data = await call(OPS.READ, ino, fh, 0, 100);
    await call(OPS.RELEASE, ino, fh); // the reader lets go of its pages
    await new Promise((r) => setImmediate(r));
    if (sentAtOnce) {
      assert.deepEqual(released, [content.toString()]);
    } else {
      assert.deepEqual(released, [], 'the kernel may still be copying the page');
      fs.dispatch(OPS.REPLIED, undefined as unknown as FuseRequest, 0, data.args[1] as number);
      assert.deepEqual(released, [content.toString()]);
    }
  }
});

test('the room a read took for the pages it fetched is given back once the kernel has its bytes (REPLIED)', async () => {
  const { addon, answers } = fakeAddon();
  (addon as { replyData: unknown }).replyData = (_req: FuseRequest, chunks: Buffer[], token: number) => void answers.push({ kind: 'data', args: [chunks, token] });
  const big = Buffer.alloc(3 * 1024, 7);
  const bigClient = {
    ...client,
    async list() {
      return [{ name: 'big.bin', type: 'file', size: big.length, mtimeMs: 1000, version: 'v1' }];
    },
    async stat() {
      return { mount: 'data', path: 'big.bin', size: big.length, mtimeMs: 1000, version: 'v1' };
    },
    async fetchPage(_file: unknown, index: number) {
      return [big.subarray(index * 1024, (index + 1) * 1024)];
    },
    fetchBatchedPage: async (_file: unknown, index: number) => [big.subarray(index * 1024, (index + 1) * 1024)],
  } as unknown as FanoutClient;
  // Windows may keep one page in all: the first read's window takes it, the second read holds its page alone.
  const fs = new FanoutFs(addon, bigClient, 1024, { ttlMs: 1000, readahead: 2, cacheBytes: 0, readBytes: 1024, aheadBytes: 1024, log: { warn: () => {} } });
  const call = caller(fs, answers);
  const ino = (await call(OPS.LOOKUP, ROOT_INO, 'big.bin')).args[0] as number;
  const first = (await call(OPS.OPEN, ino, 0)).args[0] as number;
  const second = (await call(OPS.OPEN, ino, 0)).args[0] as number;
  const kept = await call(OPS.READ, ino, first, 1024, 100);
  assert.equal(fs.readBytesInUse(), 0, "the window's page costs no room");
  const data = await call(OPS.READ, ino, second, 2048, 1024);
  assert.deepEqual(Buffer.concat(data.args[0] as Buffer[]), big.subarray(2048));
  assert.equal(fs.readBytesInUse(), 1024, 'held while the kernel may still be copying');
  fs.dispatch(OPS.REPLIED, undefined as unknown as FuseRequest, 0, data.args[1] as number);
  assert.equal(fs.readBytesInUse(), 0);
  fs.dispatch(OPS.REPLIED, undefined as unknown as FuseRequest, 0, kept.args[1] as number);
  await call(OPS.RELEASE, ino, first);
  await call(OPS.RELEASE, ino, second);
});

test('an interrupted read (the kernel\'s FUSE_INTERRUPT, told by the addon) is answered EINTR at once, with no EIO log line', async () => {
  const { addon, answers } = fakeAddon();
  const arrivals: (() => void)[] = [];
  const fetchPage = () => new Promise<Buffer[]>((resolve) => arrivals.push(() => resolve([content])));
  const stalled = { ...client, fetchPage, fetchBatchedPage: fetchPage } as unknown as FanoutClient;
  const warnings: string[] = [];
  const fs = new FanoutFs(addon, stalled, 1024, { ttlMs: 1000, readahead: 2, log: { warn: (_f, message) => warnings.push(message) } });
  const call = caller(fs, answers);
  const dataIno = (await call(OPS.LOOKUP, ROOT_INO, 'data')).args[0] as number;
  const ino = (await call(OPS.LOOKUP, dataIno, 'hello.txt')).args[0] as number;
  const fh = (await call(OPS.OPEN, ino, 0)).args[0] as number;
  const before = answers.length;
  fs.dispatch(OPS.READ, {} as FuseRequest, ino, fh, 0, 100, 7);
  fs.dispatch(OPS.INTERRUPTED, undefined as unknown as FuseRequest, 0, 8); // another read's: nothing here
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.equal(answers.length, before, 'the read waits for its page');
  fs.dispatch(OPS.INTERRUPTED, undefined as unknown as FuseRequest, 0, 7);
  while (answers.length === before) await new Promise((r) => setImmediate(r));
  assert.deepEqual(answers[before], { kind: 'error', args: [errno.EINTR] });
  assert.deepEqual(warnings, []);
  for (const arrive of arrivals) arrive(); // the page arriving late answers nothing more
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.equal(answers.length, before + 1);
});

test('interrupted lookups, getattrs, opens and opendirs waiting for the cluster are answered EINTR at once; their late answers change nothing', async () => {
  const { addon, answers } = fakeAddon();
  const held: (() => void)[] = [];
  let stall = false;
  // Every stat and listing waits while `stall` (a stopped worker), until released.
  const wait = <T>(value: () => Promise<T>) => (stall ? new Promise<void>((r) => held.push(r)).then(value) : value());
  const stalled = { ...client, list: (p: string) => wait(() => client.list(p)), stat: (p: string) => wait(() => client.stat(p)) } as unknown as FanoutClient;
  const warnings: string[] = [];
  const clock = new ManualClock();
  const fs = new FanoutFs(addon, stalled, 1024, { ttlMs: 1000, readahead: 2, clock, log: { warn: (_f, message) => warnings.push(message) } });
  const call = caller(fs, answers);
  const dataIno = (await call(OPS.LOOKUP, ROOT_INO, 'data')).args[0] as number;
  const ino = (await call(OPS.LOOKUP, dataIno, 'hello.txt')).args[0] as number;
  await clock.advance(2000); // every stat and listing known here expired
  stall = true;
  const requests: [number, number, (number | string | undefined)?][] = [
    [OPS.LOOKUP, dataIno, 'hello.txt'],
    [OPS.GETATTR, ino],
    [OPS.OPEN, ino, 0],
    [OPS.OPENDIR, dataIno],
  ];
  let id = 100;
  for (const [op, node, a] of requests) {
    const before = answers.length;
    const interruptId = ++id;
    fs.dispatch(op, {} as FuseRequest, node, a, undefined, undefined, interruptId);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.equal(answers.length, before, `op ${op} waits for the cluster`);
    fs.dispatch(OPS.INTERRUPTED, undefined as unknown as FuseRequest, 0, interruptId);
    for (let i = 0; i < 20 && answers.length === before; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(answers[before], { kind: 'error', args: [errno.EINTR] }, `op ${op}`);
  }
  const answered = answers.length;
  stall = false;
  for (const release of held) release(); // the cluster answers late
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.equal(answers.length, answered, 'nothing more is answered');
  assert.deepEqual(warnings, []);
  // The interrupted lookup took no reference: forgetting the one the first lookup took forgets the inode.
  fs.dispatch(OPS.FORGET, undefined as unknown as FuseRequest, ino, 1);
  assert.deepEqual(await call(OPS.GETATTR, ino), { kind: 'error', args: [errno.ENOENT] });
});

test('errors map to the errno POSIX tools expect', () => {
  assert.equal(errnoFor(new FanoutError('NOT_FOUND', '')), errno.ENOENT);
  assert.equal(errnoFor(new FanoutError('UNKNOWN_MOUNT', '')), errno.ENOENT);
  assert.equal(errnoFor(new FanoutError('IS_A_DIRECTORY', '')), errno.EISDIR);
  assert.equal(errnoFor(new FanoutError('WORKER_UNAVAILABLE', '')), errno.EIO);
  assert.equal(errnoFor(new FanoutError('SOURCE_CHANGED', '')), errno.EIO);
  assert.equal(errnoFor(new Error('boom')), errno.EIO);
});

test('files of at least a page open with direct I/O where the kernel allows mmap of them; small files, --no-direct-io and older kernels keep the page cache', async () => {
  const big = { mount: 'data', path: 'big.bin', size: 3000, mtimeMs: 1000, version: 'v1' };
  const small = { mount: 'data', path: 'small.bin', size: 10, mtimeMs: 1000, version: 'v1' };
  const bigClient = {
    async list(path: string) {
      if (path === '/') return [{ name: 'data', type: 'dir' }];
      return [big, small].map((f) => ({ name: f.path, type: 'file', size: f.size, mtimeMs: f.mtimeMs, version: f.version }));
    },
    async stat(path: string) {
      return path.endsWith('big.bin') ? big : small;
    },
    async fetchPage(file: { size: number }, index: number) {
      return [Buffer.alloc(Math.min(1024, file.size - index * 1024), index)];
    },
    async fetchBatchedPage(file: { size: number }, index: number) {
      return [Buffer.alloc(Math.min(1024, file.size - index * 1024), index)];
    },
    releasePage() {},
    pageReader() {
      return this;
    },
  } as unknown as FanoutClient;
  const opened = async (directIo: boolean | undefined, kernelAllowsMmap: boolean) => {
    const { addon, answers } = fakeAddon();
    const offers: string[] = [];
    Object.assign(addon, {
      initInfo: () => ({ done: true, maxPages: 1024, directIoMmap: kernelAllowsMmap, kernelFlags: 0 }),
      offerFile: () => {},
      offer: (_s: unknown, fileId: number, index: number) => (offers.push(`${fileId}:${index}`), true),
      withdraw: () => true,
    });
    const fs = new FanoutFs(addon, bigClient, 1024, { ttlMs: 1000, readahead: 2, directIo, log: { warn: () => {} } });
    fs.attach({} as never);
    const call = async (op: number, ino: number, a?: number | string) => {
      const before = answers.length;
      fs.dispatch(op, {} as FuseRequest, ino, a);
      while (answers.length === before) await new Promise((r) => setImmediate(r));
      return answers[answers.length - 1]!;
    };
    const dataIno = (await call(OPS.LOOKUP, ROOT_INO, 'data')).args[0] as number;
    const bigIno = (await call(OPS.LOOKUP, dataIno, 'big.bin')).args[0] as number;
    const smallIno = (await call(OPS.LOOKUP, dataIno, 'small.bin')).args[0] as number;
    const bigOpen = (await call(OPS.OPEN, bigIno, 0)).args;
    const smallOpen = (await call(OPS.OPEN, smallIno, 0)).args;
    return { big: bigOpen[2], small: smallOpen[2], fh: bigOpen[0] as number, fs, offers };
  };
  const on = await opened(undefined, true);
  assert.deepEqual([on.big, on.small], [true, false]);
  assert.deepEqual([(await opened(false, true)).big, (await opened(true, false)).big], [false, false]);
  // The first page is fetched at open and offered; a read the addon answered moves the window on.
  await new Promise((r) => setTimeout(r, 5));
  const ofBig = () => on.offers.filter((o) => o.startsWith('1:')).sort();
  assert.deepEqual(ofBig(), ['1:0']);
  on.fs.dispatch(OPS.SERVED, undefined as unknown as FuseRequest, 0, on.fh, 0, 1024);
  on.fs.dispatch(OPS.SERVED, undefined as unknown as FuseRequest, 0, on.fh, 1024, 1024);
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(ofBig(), ['1:0', '1:2'], 'the page after the one read is fetched ahead and offered');
});

test('a read that finds the file at another version makes the next open ask again: ESTALE, not the dead version for the rest of the TTL', async () => {
  const { addon, answers } = fakeAddon();
  let version = 'v1';
  let stats = 0;
  const changing = {
    async list(path: string) {
      if (path === '/data') return [{ name: 'grows.log', type: 'file', size: content.length, mtimeMs: 1000, version }];
      return [{ name: 'data', type: 'dir' }];
    },
    async stat(path: string) {
      stats++;
      if (path === '/data/grows.log') return { mount: 'data', path: 'grows.log', size: content.length, mtimeMs: 1000, version };
      throw new FanoutError('NOT_FOUND', 'missing');
    },
    async fetchPage(ref: { version: string }) {
      if (ref.version !== version) throw new FanoutError('SOURCE_CHANGED', '/data/grows.log is at another version than the one asked for');
      return [content];
    },
    releasePage() {},
    pageReader() {
      return this;
    },
  } as unknown as FanoutClient;
  const fs = new FanoutFs(addon, changing, 1024, { ttlMs: 60_000, readahead: 2, log: { warn() {} } });
  const call = caller(fs, answers);
  const dataIno = (await call(OPS.LOOKUP, ROOT_INO, 'data')).args[0] as number;
  const ino = (await call(OPS.LOOKUP, dataIno, 'grows.log')).args[0] as number;
  assert.ok(ino > 0);
  const first = await call(OPS.OPEN, ino, 0);
  assert.equal(first.kind, 'open');
  version = 'v2'; // the file grows at the source
  assert.deepEqual(await call(OPS.READ, ino, first.args[0] as number, 0, 100), { kind: 'error', args: [errno.EIO] });
  const statsBefore = stats;
  assert.deepEqual(await call(OPS.OPEN, ino, 0), { kind: 'error', args: [errno.ESTALE] }, 'the stale inode is refused, so the kernel looks the name up again');
  assert.equal(stats, statsBefore + 1, 'the path was stat-ed again within its 60 s TTL');
  const fresh = (await call(OPS.LOOKUP, dataIno, 'grows.log')).args[0] as number;
  assert.ok(fresh > 0 && fresh !== ino, 'a new inode for the new version');
  const reopened = await call(OPS.OPEN, fresh, 0);
  assert.equal(reopened.kind, 'open');
  const data = await call(OPS.READ, fresh, reopened.args[0] as number, 0, 100);
  assert.equal(Buffer.concat(data.args[0] as Buffer[]).toString(), content.toString(), 'the new version reads');
});

test('statfs reports no inode count (df -i shows none, not 100 % used)', async () => {
  const { addon, answers } = fakeAddon();
  const withStatus = { ...client, status: async () => ({ totals: { capacity: 1 << 30, used: 1 << 20 } }) } as unknown as FanoutClient;
  const fs = new FanoutFs(addon, withStatus, 1024, { ttlMs: 1000, readahead: 2, log: { warn() {} } });
  fs.dispatch(OPS.STATFS, {} as FuseRequest, ROOT_INO);
  while (answers.length === 0) await new Promise((r) => setImmediate(r));
  assert.equal(answers[0]!.kind, 'statfs');
  assert.equal(answers[0]!.args[3], 0, 'files: 0');
});
