import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StatResult } from '../client/index.js';
import { ManualClock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import type { DirEntry } from '../core/types.js';
import { Metadata, type MetadataSource } from './metadata.js';

function fakeClient(listable = true): MetadataSource & { calls: string[] } {
  const calls: string[] = [];
  const files: Record<string, StatResult> = {
    '/data/m/a.bin': { mount: 'data', path: 'm/a.bin', size: 10, mtimeMs: 5, version: 'v1' },
  };
  return {
    calls,
    async stat(path: string) {
      calls.push(`stat ${path}`);
      if (files[path]) return files[path]!;
      if (path === '/data/m') throw new FanoutError('IS_A_DIRECTORY', 'a directory');
      throw new FanoutError('NOT_FOUND', `${path} not found`);
    },
    async list(path: string): Promise<DirEntry[]> {
      calls.push(`list ${path}`);
      if (path === '/') return [{ name: 'data', type: 'dir' }];
      if (!listable) throw new FanoutError('NOT_LISTABLE', 'HTTP sources cannot be listed');
      if (path === '/data') return [{ name: 'm', type: 'dir' }];
      return [{ name: 'a.bin', type: 'file', size: 10, mtimeMs: 5, version: 'v1' }];
    },
  };
}

test('lookups are answered from the parent listing, which also answers stat', async () => {
  const client = fakeClient();
  const meta = new Metadata(client, 1000, new ManualClock());
  assert.deepEqual(await meta.lookup('', 'data'), { isDir: true, size: 0, mtimeMs: 0 });
  assert.deepEqual(await meta.lookup('data/m', 'a.bin'), { isDir: false, size: 10, mtimeMs: 5, version: 'v1' });
  assert.equal(await meta.lookup('data/m', 'missing'), undefined);
  assert.equal((await meta.stat('data/m/a.bin')).version, 'v1');
  assert.deepEqual(client.calls, ['list /', 'list /data/m']);
});

test('answers are reused for the TTL, then asked again', async () => {
  const client = fakeClient();
  const clock = new ManualClock();
  const meta = new Metadata(client, 1000, clock);
  await meta.list('data');
  await meta.list('data');
  clock.advance(1001);
  await meta.list('data');
  assert.deepEqual(client.calls, ['list /data', 'list /data']);
});

test('a source that cannot list is looked up path by path', async () => {
  const meta = new Metadata(fakeClient(false), 1000, new ManualClock());
  assert.deepEqual(await meta.lookup('data/m', 'a.bin'), { isDir: false, size: 10, mtimeMs: 5, version: 'v1' });
  assert.deepEqual(await meta.lookup('data', 'm'), { isDir: true, size: 0, mtimeMs: 0 });
  assert.equal(await meta.lookup('data/m', 'missing'), undefined);
});

test('cluster failures are errors, not missing files', async () => {
  const client = fakeClient();
  client.list = async () => {
    throw new FanoutError('WORKER_UNAVAILABLE', 'cannot reach fanout');
  };
  const meta = new Metadata(client, 1000, new ManualClock());
  await assert.rejects(meta.lookup('data', 'm'), /cannot reach fanout/);
});

test('a listing refused for another reason is an error, not a source that cannot list', async () => {
  const client = fakeClient();
  client.list = async () => {
    throw new FanoutError('INVALID_ARGUMENT', 'the listing request is wrong');
  };
  const meta = new Metadata(client, 1000, new ManualClock());
  await assert.rejects(meta.lookup('data/m', 'a.bin'), (err: FanoutError) => err.code === 'INVALID_ARGUMENT');
  assert.deepEqual(client.calls, [], 'no stat path by path');
});

test('what is left of a stat answer\'s TTL is told for its own version only, and asks the cluster nothing', async () => {
  const client = fakeClient();
  const clock = new ManualClock();
  const meta = new Metadata(client, 1000, clock);
  assert.equal(await meta.statValidMs('data/m/a.bin', 'v1'), 0, 'nothing cached yet');
  await meta.stat('data/m/a.bin');
  await clock.advance(300);
  assert.equal(await meta.statValidMs('data/m/a.bin', 'v1'), 700);
  assert.equal(await meta.statValidMs('data/m/a.bin', 'v0'), 0, 'another version');
  await clock.advance(700);
  assert.equal(await meta.statValidMs('data/m/a.bin', 'v1'), 0, 'expired');
  assert.deepEqual(client.calls, ['stat /data/m/a.bin']);
});

test('a listing shows names a directory entry can hold, each once: longer ones and repeats are left out', async () => {
  const long = 'x'.repeat(256);
  const client: MetadataSource = {
    async stat() {
      throw new FanoutError('NOT_FOUND', 'not asked');
    },
    async list(): Promise<DirEntry[]> {
      return [
        { name: 'é'.repeat(127) + 'a', type: 'file', size: 1, mtimeMs: 1, version: 'v1' }, // 255 bytes: kept
        { name: long, type: 'file', size: 1, mtimeMs: 1, version: 'v1' },
        { name: 'é'.repeat(128), type: 'file', size: 1, mtimeMs: 1, version: 'v1' }, // 128 characters, 256 bytes
        { name: 'a', type: 'file', size: 1, mtimeMs: 1, version: 'v1' },
        { name: 'a', type: 'dir' },
        { name: 'b', type: 'dir' },
      ];
    },
  };
  const meta = new Metadata(client, 1000, new ManualClock());
  const names = (await meta.list('data')).map((e) => `${e.name.length}:${e.type}`);
  assert.deepEqual(names, ['128:file', '1:file', '1:dir']);
  assert.equal(await meta.lookup('data', long), undefined);
  assert.deepEqual(await meta.lookup('data', 'a'), { isDir: false, size: 1, mtimeMs: 1, version: 'v1' });
});
