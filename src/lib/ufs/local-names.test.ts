import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalUfs } from './local.js';
import { readAll, rejectsWith } from '../../../test/harness/streams.js';

// Found by the API fuzzer: a 300-byte name was a 502 SOURCE_ERROR (S3 clients retried it as 503).
let base: string;
before(async () => {
  base = await mkdtemp(join(tmpdir(), 'fanout-names-'));
  await writeFile(join(base, 'a.txt'), 'a');
});
after(() => rm(base, { recursive: true, force: true }));

test('a name longer than the filesystem allows is INVALID_PATH (a client error), in stat, list and read', async () => {
  const ufs = new LocalUfs(base);
  const long = 'x'.repeat(300);
  await assert.rejects(ufs.stat(long), rejectsWith('INVALID_PATH'));
  await assert.rejects(ufs.stat(`${long}/a.txt`), rejectsWith('INVALID_PATH'));
  await assert.rejects(ufs.list(long), rejectsWith('INVALID_PATH'));
  await assert.rejects(readAll(ufs.read(long, '1-1', 0, 1)), rejectsWith('INVALID_PATH'));
  assert.equal((await ufs.stat('a.txt')).size, 1);
});
