import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalUfs } from './local.js';
import { printableName } from './localnames.js';
import type { SkippedEntry } from './types.js';

// Found by a fault hunt: entries the listing cannot give as files were left out without a word,
// and `release publish` took such a listing for the whole tree.
let base: string;
let root: string;
let socket: Server;
before(async () => {
  base = await mkdtemp(join(tmpdir(), 'fanout-skipped-'));
  root = join(base, 'root');
  await mkdir(join(root, 'sub'), { recursive: true });
  await writeFile(join(root, 'plain.txt'), 'plain');
  await writeFile(join(root, 'sub/inner.txt'), 'inner');
  await writeFile(join(base, 'secret.txt'), 'outside the root');
  // A name that is really U+FFFD, beside one whose byte 0xff Node reads as U+FFFD.
  await writeFile(join(root, 'b\uFFFDa'), 'real replacement character');
  writeFileSync(Buffer.concat([Buffer.from(root), Buffer.from([0x2f, 0x62, 0xff, 0x61])]), 'latin');
  await symlink('missing', join(root, 'dangling'));
  await symlink('self', join(root, 'self'));
  await symlink('../secret.txt', join(root, 'outside'));
  await symlink('plain.txt', join(root, 'inside'));
  await symlink('..', join(root, 'sub/up'));
  execFileSync('mkfifo', [join(root, 'fifo')]);
  socket = createServer();
  await new Promise<void>((resolve) => socket.listen(join(root, 'sock'), resolve));
});
after(async () => {
  await new Promise((resolve) => socket.close(resolve));
  await rm(base, { recursive: true, force: true });
});

const listed = async (dir: string) => {
  const skipped: SkippedEntry[] = [];
  const names = (await new LocalUfs(root).list(dir, undefined, { onSkipped: (e) => skipped.push(e) })).map((e) => e.name);
  return { names, skipped: skipped.sort((a, b) => (a.name < b.name ? -1 : 1)) };
};

test('a directory listing tells every entry it leaves out and why, and lists the rest as before', async () => {
  const { names, skipped } = await listed('');
  assert.deepEqual(names, ['b\uFFFDa', 'inside', 'plain.txt', 'sub']);
  assert.deepEqual(skipped, [
    { name: 'b\\xffa', reason: 'not-utf8' },
    { name: 'dangling', reason: 'dangling-link' },
    { name: 'fifo', reason: 'special-file' },
    { name: 'outside', reason: 'link-outside' },
    { name: 'self', reason: 'dangling-link' },
    { name: 'sock', reason: 'special-file' },
  ]);
  // Without the option: the same entries (what `fanout ls` and S3 listings get).
  assert.deepEqual((await new LocalUfs(root).list('')).map((e) => e.name), names);
});

test('a link back up (a loop) is left out without being told: its tree is listed already', async () => {
  assert.deepEqual(await listed('sub'), { names: ['inner.txt'], skipped: [] });
});

test('names that are not UTF-8 are shown with their other bytes as \\xNN', () => {
  assert.equal(printableName(Buffer.from([0x63, 0x61, 0x66, 0xe9])), 'caf\\xe9');
  assert.equal(printableName(Buffer.from('café ✓', 'utf8')), 'café ✓');
  assert.equal(printableName(Buffer.from([0xe2, 0x9c, 0x2f, 0xf0, 0x9f, 0x98, 0x80])), '\\xe2\\x9c/😀');
});
