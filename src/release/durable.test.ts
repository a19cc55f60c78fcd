import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutError } from '../core/errors.js';
import { makeDurable } from './durable.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-durable-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a staged tree is flushed with one syncfs when `sync -f` runs', () =>
  withDir(async (dir) => {
    await writeFile(join(dir, 'a'), 'a');
    // A file that does not exist is never opened: the file system is flushed as a whole.
    await makeDurable(dir, [join(dir, 'a'), join(dir, 'not-there')]);
  }));

test('without a `sync` to run, every file is flushed one by one (and a missing one fails)', () =>
  withDir(async (dir) => {
    await writeFile(join(dir, 'a'), 'a');
    await writeFile(join(dir, 'b'), 'b');
    await makeDurable(dir, [join(dir, 'a'), join(dir, 'b')], undefined, join(dir, 'no-such-command'));
    await assert.rejects(makeDurable(dir, [join(dir, 'a'), join(dir, 'gone')], undefined, join(dir, 'no-such-command')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
  }));

test('a flush that runs and fails is an error, not a silent success', () =>
  withDir(async (dir) => {
    // `false` runs and exits 1, as `sync -f` does on a write-back error.
    await assert.rejects(makeDurable(dir, [], undefined, 'false'), (err: unknown) => err instanceof FanoutError && err.code === 'INTERNAL');
  }));
