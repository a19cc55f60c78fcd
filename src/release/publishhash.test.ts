import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalUfs } from '../lib/ufs/index.js';
import type { Ufs } from '../lib/ufs/index.js';
import { hashFile } from './manifest.js';
import { hashFiles } from './publishhash.js';
import { walkTree } from './publishwalk.js';
import { rejectsWith } from '../../test/harness/streams.js';

const PAGE = 4096;
let root: string;
const contents = new Map<string, Buffer>();
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'fanout-publish-hash-'));
  // Sizes on both sides of the whole-file read (one page) and of page boundaries.
  const sizes = [0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE, 3 * PAGE + 5];
  for (const [i, size] of sizes.entries()) contents.set(`d${i % 3}/f${i}.bin`, randomBytes(size));
  contents.set('a.txt', Buffer.from('beside the directory a'));
  contents.set('a/z.bin', randomBytes(10));
  contents.set('Z', randomBytes(3));
  for (const [path, bytes] of contents) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), bytes);
  }
});
after(() => rm(root, { recursive: true, force: true }));

async function expected(path: string) {
  async function* one() {
    yield contents.get(path)!;
  }
  return hashFile(one(), PAGE);
}

/** The same source without its whole-file reads: every file streamed. */
function streamedOnly(ufs: Ufs): Ufs {
  return { stat: (p, s) => ufs.stat(p, s), list: (d, s, o) => ufs.list(d, s, o), read: (p, v, o, l, s) => ufs.read(p, v, o, l, s) };
}

test('the walk lists every file depth first in code-point order, as one directory after the other would', async () => {
  const { files, unpublishable } = await walkTree(new LocalUfs(root), '');
  assert.deepEqual(unpublishable, []);
  assert.deepEqual(
    files.map((f) => f.path),
    ['Z', 'a/z.bin', 'a.txt', 'd0/f0.bin', 'd0/f3.bin', 'd0/f6.bin', 'd1/f1.bin', 'd1/f4.bin', 'd2/f2.bin', 'd2/f5.bin'],
  );
});

test('files are hashed per page and whole, in the order given, read whole or streamed alike', async () => {
  const ufs = new LocalUfs(root);
  assert.ok(ufs.readInto, 'the small-file addon is built: whole reads are tested');
  const { files } = await walkTree(ufs, '');
  const want = await Promise.all(files.map((f) => expected(f.path)));
  const done: string[] = [];
  assert.deepEqual(await hashFiles(ufs, files, { pageSize: PAGE, onFile: (f) => done.push(f.path) }), want);
  assert.deepEqual(done.sort(), files.map((f) => f.path).sort());
  assert.deepEqual(await hashFiles(streamedOnly(ufs), files, { pageSize: PAGE }), want);
});

test('a file changed since it was listed fails the hashing with SOURCE_CHANGED, whole or streamed', async () => {
  const ufs = new LocalUfs(root);
  const { files } = await walkTree(ufs, 'd1');
  await utimes(join(root, 'd1/f1.bin'), 1_600_000_000, 1_600_000_000);
  await utimes(join(root, 'd1/f4.bin'), 1_600_000_000, 1_600_000_000);
  await assert.rejects(hashFiles(ufs, files.slice(0, 1), { pageSize: PAGE }), rejectsWith('SOURCE_CHANGED'));
  await assert.rejects(hashFiles(ufs, files.slice(1), { pageSize: PAGE }), rejectsWith('SOURCE_CHANGED'));
});
