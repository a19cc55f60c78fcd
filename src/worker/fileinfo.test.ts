import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DirEntry, FileInfo } from '../core/types.js';
import type { Ufs } from '../lib/ufs/index.js';
import { TtlCache } from '../lib/ttlcache/index.js';
import { monotonicClock } from '../core/clock.js';
import { FileInfoService } from './fileinfo.js';
import { SourceListings } from './listings.js';

test('a listing leaves out names no fanout path can hold (they could be seen through the mount, never opened)', async () => {
  const names = ['plain.bin', 'back\\slash', 'tab\tbed', 'new\nline', 'del\u007f', 'ok name ü.txt'];
  const ufs = { list: async () => names.map((name): DirEntry => ({ name, type: 'file', size: 1, mtimeMs: 0, version: 'v' })) } as unknown as Ufs;
  const files = new FileInfoService(() => ufs, { stat: new TtlCache<FileInfo>(1000, monotonicClock), list: new TtlCache<DirEntry[]>(1000, monotonicClock) }, new SourceListings({ concurrent: 8, queued: 8, clock: monotonicClock }));
  assert.deepEqual((await files.listDir({ mount: 'data', path: '' })).map((e) => e.name), ['plain.bin', 'ok name ü.txt']);
});

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('a listing runs once for the requests asking meanwhile, is cached once it ended, and stops when every request asking for it has left', async () => {
  let started = 0;
  let aborted = 0;
  let finish: ((entries: DirEntry[]) => void) | undefined;
  const ufs = {
    list: (_dir: string, signal: AbortSignal) =>
      new Promise<DirEntry[]>((resolve, reject) => {
        started++;
        finish = resolve;
        signal.addEventListener('abort', () => {
          aborted++;
          reject(signal.reason);
        });
      }),
  } as unknown as Ufs;
  const files = new FileInfoService(() => ufs, { stat: new TtlCache<FileInfo>(1000, monotonicClock), list: new TtlCache<DirEntry[]>(60_000, monotonicClock) }, new SourceListings({ concurrent: 8, queued: 8, clock: monotonicClock }));
  const [a, b] = [new AbortController(), new AbortController()];
  const first = files.listDir({ mount: 'data', path: 'd' }, a.signal);
  const second = files.listDir({ mount: 'data', path: 'd' }, b.signal);
  await tick();
  assert.equal(started, 1, 'one listing for both');
  a.abort();
  await assert.rejects(first, (e: { code?: string }) => e.code === 'ABORTED');
  assert.equal(aborted, 0, 'the other request still waits for it');
  b.abort();
  await assert.rejects(second, (e: { code?: string }) => e.code === 'ABORTED');
  assert.equal(aborted, 1, 'stopped once both left (before: it ran to its end, up to timeouts.sourceList)');

  const third = files.listDir({ mount: 'data', path: 'd' }, new AbortController().signal);
  await tick();
  assert.equal(started, 2, 'a stopped listing is not joined nor cached: a new request starts it again');
  finish!([{ name: 'x.bin', type: 'file' }]);
  assert.deepEqual((await third).map((e) => e.name), ['x.bin']);
  assert.deepEqual((await files.listDir({ mount: 'data', path: 'd' })).map((e) => e.name), ['x.bin']);
  assert.equal(started, 2, 'then cached');
});
