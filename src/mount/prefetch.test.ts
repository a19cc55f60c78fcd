import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StatResult } from '../client/index.js';
import type { DirEntry } from '../core/types.js';
import { DirectoryPrefetch } from './prefetch.js';

function fakeDeps(count: number, size = 100) {
  const entries: DirEntry[] = [{ name: 'sub', type: 'dir' }];
  for (let i = 0; i < count; i++) entries.push({ name: `f${String(i).padStart(3, '0')}`, type: 'file', size, mtimeMs: 1, version: 'v' });
  const fetched: string[] = [];
  return {
    fetched,
    deps: {
      list: async (path: string) => {
        if (path !== 'data/dir') throw new Error(`unexpected list ${path}`);
        return entries;
      },
      stat: async (path: string): Promise<StatResult> => ({ mount: 'data', path: path.slice('data/'.length), size, mtimeMs: 1, version: 'v' }),
      prefetchPage: (file: StatResult, index: number) => {
        fetched.push(`${file.path}#${index}`);
      },
    },
  };
}

const settle = () => new Promise((r) => setImmediate(r));

test('opening the files of a directory in order fetches the first pages of the next ones, each once, half a window at a time', async () => {
  const { deps, fetched } = fakeDeps(20);
  const prefetch = new DirectoryPrefetch(deps, { files: 4, bytes: 1 << 20, pageSize: 4096 });
  await prefetch.opened('data/dir/f000');
  await settle();
  assert.deepEqual(fetched, [], 'one open is not yet a walk');
  await prefetch.opened('data/dir/f001');
  await settle();
  assert.deepEqual(fetched, ['dir/f002#0', 'dir/f003#0', 'dir/f004#0', 'dir/f005#0']);
  await prefetch.opened('data/dir/f002');
  await settle();
  assert.deepEqual(fetched.slice(4), [], 'three of four still ahead: nothing asked yet');
  await prefetch.opened('data/dir/f003');
  await settle();
  assert.deepEqual(fetched.slice(4), ['dir/f006#0', 'dir/f007#0'], 'the files newly in reach, together');
  for (const name of ['f004', 'f005', 'f006', 'f007', 'f008', 'f009']) await prefetch.opened(`data/dir/${name}`);
  await settle();
  assert.deepEqual(fetched.slice(6), ['dir/f008#0', 'dir/f009#0', 'dir/f010#0', 'dir/f011#0', 'dir/f012#0', 'dir/f013#0']);
});

test('near the end of a listing the last files are asked for at once', async () => {
  const { deps, fetched } = fakeDeps(7);
  const prefetch = new DirectoryPrefetch(deps, { files: 4, bytes: 1 << 20, pageSize: 4096 });
  for (const name of ['f000', 'f001']) await prefetch.opened(`data/dir/${name}`);
  await settle();
  assert.deepEqual(fetched, ['dir/f002#0', 'dir/f003#0', 'dir/f004#0', 'dir/f005#0']);
  await prefetch.opened('data/dir/f002');
  await settle();
  assert.deepEqual(fetched.slice(4), ['dir/f006#0'], 'the listing ends with f006: no half window to wait for');
  await prefetch.opened('data/dir/f003');
  await settle();
  assert.equal(fetched.length, 5);
  assert.equal(new Set(fetched).size, fetched.length, 'each page asked for once');
});

test('a random open fetches nothing ahead', async () => {
  const { deps, fetched } = fakeDeps(50);
  const prefetch = new DirectoryPrefetch(deps, { files: 4, bytes: 1 << 20, pageSize: 4096 });
  for (const name of ['f030', 'f002', 'f041', 'f010']) await prefetch.opened(`data/dir/${name}`);
  await settle();
  assert.deepEqual(fetched, []);
});

test('what is fetched ahead stays within the byte bound', async () => {
  const { deps, fetched } = fakeDeps(20, 3000);
  const prefetch = new DirectoryPrefetch(deps, { files: 10, bytes: 10_000, pageSize: 4096 });
  await prefetch.opened('data/dir/f000');
  await prefetch.opened('data/dir/f001');
  await settle();
  assert.deepEqual(fetched, ['dir/f002#0', 'dir/f003#0', 'dir/f004#0']);
});
