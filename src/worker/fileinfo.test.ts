import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DirEntry, FileInfo } from '../core/types.js';
import type { Ufs } from '../lib/ufs/index.js';
import { TtlCache } from '../lib/ttlcache/index.js';
import { systemClock } from '../core/clock.js';
import { FileInfoService } from './fileinfo.js';

test('a listing leaves out names no fanout path can hold (they could be seen through the mount, never opened)', async () => {
  const names = ['plain.bin', 'back\\slash', 'tab\tbed', 'new\nline', 'del\u007f', 'ok name ü.txt'];
  const ufs = { list: async () => names.map((name): DirEntry => ({ name, type: 'file', size: 1, mtimeMs: 0, version: 'v' })) } as unknown as Ufs;
  const files = new FileInfoService(() => ufs, { stat: new TtlCache<FileInfo>(1000, systemClock), list: new TtlCache<DirEntry[]>(1000, systemClock) });
  assert.deepEqual((await files.listDir({ mount: 'data', path: '' })).map((e) => e.name), ['plain.bin', 'ok name ü.txt']);
});
