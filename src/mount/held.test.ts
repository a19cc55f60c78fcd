import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StatResult } from '../client/index.js';
import { HeldFiles, type HeldMetadata } from './held.js';
import { InodeTable } from './inodes.js';
import type { FuseAddon, FuseSession } from './native.js';
import { MountPages, type PageFetch } from './pages.js';

const PAGE = 1024;
const file = (path: string, size: number, version = 'v1'): StatResult => ({ mount: 'data', path, size, mtimeMs: 5, version });

function setup(validMs: Record<string, number> = {}) {
  const holds: { ino: number; size: number; validMs: number; bytes: string }[] = [];
  const drops: number[] = [];
  const addon = {
    hold: (_s: FuseSession, ino: number, _mode: number, size: number, _mtime: number, _attr: number, valid: number, chunks: Buffer[]) =>
      void holds.push({ ino, size, validMs: valid, bytes: Buffer.concat(chunks).toString() }),
    drop: (_s: FuseSession, ino: number) => void drops.push(ino),
  } as unknown as FuseAddon;
  const released: string[] = [];
  const fetched: string[] = [];
  const source: PageFetch = {
    fetchPage: async (f, index) => (fetched.push(`${f.path}#${index}`), [Buffer.alloc(Math.min(PAGE, f.size - index * PAGE), 'x')]),
    fetchBatchedPage: async (f, index) => (fetched.push(`${f.path}#${index}`), [Buffer.alloc(Math.min(PAGE, f.size - index * PAGE), 'x')]),
    releasePage: (page) => void released.push(`${page[0]!.length}`),
  };
  const pages = new MountPages(source, PAGE, 1 << 20);
  const inodes = new InodeTable();
  const meta: HeldMetadata = { statValidMs: async (path) => validMs[path] ?? 0 };
  const held = new HeldFiles(addon, pages, inodes, meta, { attrTimeoutS: 1, maxFileBytes: 512, fileMode: 0o100444, defaultMtimeMs: 1 });
  const settle = () => new Promise((r) => setTimeout(r, 10));
  return { held, holds, drops, inodes, pages, released, fetched, settle };
}

test('a small file fetched ahead is handed down whole, for what is left of its stat TTL, and its page is kept for a read that comes too late', async () => {
  const { held, holds, inodes, pages, released, settle } = setup({ 'data/a.bin': 700 });
  const node = inodes.remember('data/a.bin', false, 'v1');
  node.openedVersion = 'v1';
  held.attach({} as FuseSession);
  held.prefetch(file('a.bin', 300), 0);
  await settle();
  assert.deepEqual(holds, [{ ino: node.ino, size: 300, validMs: 700, bytes: 'x'.repeat(300) }]);
  // The next open answered here must not keep kernel pages cached by the addon's opens.
  assert.equal(node.openedVersion, undefined);
  assert.deepEqual(released, []);
  assert.equal(pages.stats().idlePages, 1);
});

test('files the kernel does not hold, files over the size bound, stale versions and later pages are only fetched ahead', async () => {
  const { held, holds, inodes, pages, fetched, settle } = setup({ 'data/unknown.bin': 700, 'data/big.bin': 700, 'data/old.bin': 0, 'data/two.bin': 700 });
  for (const path of ['data/big.bin', 'data/old.bin', 'data/two.bin']) inodes.remember(path, false, 'v1');
  held.attach({} as FuseSession);
  held.prefetch(file('unknown.bin', 100), 0);
  held.prefetch(file('big.bin', 600), 0);
  held.prefetch(file('old.bin', 100), 0);
  held.prefetch(file('two.bin', 2000), 1);
  await settle();
  assert.deepEqual(holds, []);
  assert.deepEqual(fetched.sort(), ['big.bin#0', 'old.bin#0', 'two.bin#1', 'unknown.bin#0']);
  assert.equal(pages.stats().idlePages, 4, 'pages not handed down stay for their reads');
});

test('nothing is handed down before the session is attached, and a forgotten inode is dropped from the addon', async () => {
  const { held, holds, drops, inodes, settle } = setup({ 'data/a.bin': 700 });
  const node = inodes.remember('data/a.bin', false, 'v1');
  held.prefetch(file('a.bin', 100), 0);
  held.forgotten(node.ino);
  await settle();
  assert.deepEqual(holds, []);
  assert.deepEqual(drops, []);
  held.attach({} as FuseSession);
  held.forgotten(node.ino);
  assert.deepEqual(drops, [node.ino]);
});

test('a lookup answered by the addon counts one more kernel reference, also for an inode forgotten just before', async () => {
  const { held, inodes } = setup();
  inodes.remember('data', true);
  const node = inodes.remember('data/a.bin', false, 'v1');
  held.attach({} as FuseSession);
  held.lookedUp(node.ino, inodes.find('data')!.ino, 'a.bin');
  assert.equal(node.lookups, 2);
  assert.equal(inodes.forget(node.ino, 2), true);
  // The note of a lookup the kernel made after forgetting: the inode comes back, same number.
  held.lookedUp(node.ino, inodes.find('data')!.ino, 'a.bin');
  assert.equal(inodes.find('data/a.bin')?.ino, node.ino);
  assert.equal(inodes.find('data/a.bin')?.lookups, 1);
});
