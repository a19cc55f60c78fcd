import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSystemClock } from './fsclock.js';

test('a link planted at the clock probe’s name is touched itself: neither its target’s times nor a file at a dangling target', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fanout-fsclock-'));
  try {
    const target = join(root, 'outside.txt');
    await writeFile(target, 'not the agent’s');
    await utimes(target, 1_000_000, 1_000_000);
    await symlink(target, join(root, '.stamp-clock'));
    const clock = new FileSystemClock(join(root, '.stamp-clock'));
    assert.equal(typeof (await clock.now()), 'bigint', 'the clock is read');
    assert.equal((await stat(target)).mtimeMs, 1_000_000_000, 'the target’s times are left alone');
    const dangling = join(root, 'nowhere.txt');
    await symlink(dangling, join(root, '.other-clock'));
    assert.equal(typeof (await new FileSystemClock(join(root, '.other-clock')).now()), 'bigint');
    assert.equal(existsSync(dangling), false, 'nothing written through a dangling link');
    // No link: the probe is created, and the clock moves on.
    const fresh = new FileSystemClock(join(root, '.fresh-clock'));
    const first = await fresh.now();
    assert.ok(first !== undefined && (await fresh.pastNow())! > first);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
