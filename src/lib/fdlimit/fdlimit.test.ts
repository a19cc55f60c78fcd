import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { descriptorShortage } from '../../core/errors.js';
import { KEPT_SEND_FILES, OpenFileLimitProbe, fdLimitShortfall, keptSendFilesFor, mountFdLimitShortfall, openFileLimit } from './index.js';

test('the soft open-file limit is read from a limits file, unlimited or unreadable as none', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-fdlimit-'));
  try {
    const file = join(dir, 'limits');
    await writeFile(file, 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            128                  4096                 files\n');
    assert.equal(openFileLimit(file), 128);
    await writeFile(file, 'Max open files            unlimited            unlimited            files\n');
    assert.equal(openFileLimit(file), undefined);
    assert.equal(openFileLimit(join(dir, 'none')), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('page files kept for sends take at most a quarter of the fd limit', () => {
  assert.equal(keptSendFilesFor(64), 16);
  assert.equal(keptSendFilesFor(256), 64);
  assert.equal(keptSendFilesFor(1024), KEPT_SEND_FILES);
  assert.equal(keptSendFilesFor(1_048_576), KEPT_SEND_FILES);
  assert.equal(keptSendFilesFor(undefined), KEPT_SEND_FILES);
  assert.equal(keptSendFilesFor(2), 1);
});

test('a limit below what the ports\' connections and kept page files want is a shortfall', () => {
  assert.deepEqual(fdLimitShortfall(128, 1, 1024), { limit: 128, wanted: 1024 + 32 + 128 });
  assert.deepEqual(fdLimitShortfall(1024, 2, 1024), { limit: 1024, wanted: 2048 + 256 + 128 });
  assert.equal(fdLimitShortfall(1_048_576, 2, 1024), undefined);
  assert.equal(fdLimitShortfall(undefined, 1, 1024), undefined);
});

test('a mount\'s threads and connections to its workers want fds; a limit below them is a shortfall', () => {
  assert.deepEqual(mountFdLimitShortfall(64, 32, 1), { limit: 64, wanted: 122 });
  assert.deepEqual(mountFdLimitShortfall(1024, 32, 40), { limit: 1024, wanted: 64 + 32 + 40 * 26 });
  assert.equal(mountFdLimitShortfall(1024, 32, 3), undefined);
  assert.equal(mountFdLimitShortfall(undefined, 32, 3), undefined);
});

test('EMFILE or ENFILE is found in an error or in what it wraps, nothing else is', () => {
  const connect = Object.assign(new Error('connect EMFILE 127.0.0.1:80'), { code: 'EMFILE' });
  assert.equal(descriptorShortage(connect), 'EMFILE');
  assert.equal(descriptorShortage(new Error('worker unreachable', { cause: new Error('fetch failed', { cause: connect }) })), 'EMFILE');
  assert.equal(descriptorShortage(Object.assign(new Error('x'), { code: 'ENFILE' })), 'ENFILE');
  assert.equal(descriptorShortage(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })), undefined);
  assert.equal(descriptorShortage(undefined), undefined);
});

test('the limit probe reads the limit again at each ask, from the descriptor it opened', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-fdlimit-'));
  try {
    const file = join(dir, 'limits');
    await writeFile(file, 'Max open files            128                  4096                 files\n');
    const probe = new OpenFileLimitProbe(file);
    assert.equal(probe.read(), 128);
    await writeFile(file, 'Max open files            64                   4096                 files\n');
    assert.equal(probe.read(), 64);
    probe.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
