import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import type { DirEntry } from '../core/types.js';
import { compareKeys, decodeToken, encodeToken, listKeys, markerPosition, positionMarker, type ListRequest, type Position } from './listing.js';
import { S3Error } from './errors.js';

/** An in-memory tree behind the one-level listing the workers offer; counts listings. */
function tree(paths: string[], emptyDirs: string[] = []) {
  const dirs = new Map<string, DirEntry[]>([['', []]]);
  const ensure = (dir: string): DirEntry[] => {
    let entries = dirs.get(dir);
    if (!entries) {
      entries = [];
      dirs.set(dir, entries);
      const slash = dir.lastIndexOf('/');
      ensure(slash === -1 ? '' : dir.slice(0, slash)).push({ name: dir.slice(slash + 1), type: 'dir' });
    }
    return entries;
  };
  for (const d of emptyDirs) ensure(d);
  for (const p of paths) {
    const slash = p.lastIndexOf('/');
    ensure(slash === -1 ? '' : p.slice(0, slash)).push({ name: p.slice(slash + 1), type: 'file', size: p.length, mtimeMs: 1000, version: `v-${p}` });
  }
  const stats = { listings: 0 };
  const listDir = async (dir: string) => {
    stats.listings++;
    const entries = dirs.get(dir);
    if (!entries) throw new FanoutError('NOT_FOUND', `no ${dir}`);
    return [...entries].reverse(); // the walker must not rely on the source's order
  };
  return { listDir, stats };
}

const FILES = ['a.txt', 'a/x', 'a/y/z', 'a-b', 'b', 'models/v1/m.bin', 'models/v1/tok.json', 'models/v2/m.bin', 'models/readme', 'zz/deep/er/file'];
const sorted = [...FILES].sort(compareKeys);

async function all(listDir: (dir: string) => Promise<DirEntry[]>, req: Omit<ListRequest, 'resume'>, resume?: Position) {
  const keys: string[] = [];
  const prefixes: string[] = [];
  let pages = 0;
  for (;;) {
    const page = await listKeys(listDir, { ...req, resume });
    pages++;
    keys.push(...page.objects.map((o) => o.key));
    prefixes.push(...page.commonPrefixes);
    if (!page.truncated) return { keys, prefixes, pages };
    assert.ok(page.next, 'a truncated page says where to resume');
    resume = decodeToken(encodeToken(page.next));
    assert.ok(pages < 100, 'listing does not terminate');
  }
}

describe('flat keyspace listing over directory listings', () => {
  test('no delimiter: every key, in S3 (UTF-8) order, whatever the page size', async () => {
    const { listDir } = tree(FILES);
    assert.deepEqual(sorted.slice(0, 4), ['a-b', 'a.txt', 'a/x', 'a/y/z']);
    for (const maxKeys of [1, 2, 3, 1000]) {
      const { keys, pages } = await all(listDir, { prefix: '', delimiter: '', maxKeys });
      assert.deepEqual(keys, sorted, `maxKeys ${maxKeys}`);
      assert.equal(pages, Math.max(1, Math.ceil(sorted.length / maxKeys)));
    }
  });

  test('prefix, start-after, and entries carry size and version', async () => {
    const { listDir, stats } = tree(FILES);
    const page = await listKeys(listDir, { prefix: 'models/v1/', delimiter: '', maxKeys: 10 });
    assert.deepEqual(page.objects, [
      { key: 'models/v1/m.bin', size: 15, mtimeMs: 1000, etag: 'v-models/v1/m.bin' },
      { key: 'models/v1/tok.json', size: 18, mtimeMs: 1000, etag: 'v-models/v1/tok.json' },
    ]);
    assert.equal(stats.listings, 1, 'starts in the directory the prefix names');
    assert.deepEqual((await all(listDir, { prefix: 'models/v', delimiter: '', maxKeys: 1 })).keys, ['models/v1/m.bin', 'models/v1/tok.json', 'models/v2/m.bin']);
    assert.deepEqual((await all(listDir, { prefix: 'a', delimiter: '', maxKeys: 2 }, { after: 'a/x', subtree: false })).keys, ['a/y/z']);
    assert.deepEqual((await all(listDir, { prefix: '', delimiter: '', maxKeys: 1000 }, { after: 'models/v1/m', subtree: false })).keys, sorted.slice(sorted.indexOf('models/v1/m.bin')));
    assert.deepEqual((await all(listDir, { prefix: 'nothing/here/', delimiter: '', maxKeys: 5 })).keys, []);
    assert.deepEqual((await all(listDir, { prefix: 'b/', delimiter: '', maxKeys: 5 })).keys, [], 'a prefix through a file');
  });

  test('delimiter: common prefixes without entering directories, paged', async () => {
    const { listDir, stats } = tree(FILES, ['empty']);
    const root = await listKeys(listDir, { prefix: '', delimiter: '/', maxKeys: 1000 });
    assert.deepEqual(root.objects.map((o) => o.key), ['a-b', 'a.txt', 'b']);
    assert.deepEqual(root.commonPrefixes, ['a/', 'empty/', 'models/', 'zz/']);
    assert.equal(stats.listings, 1);
    for (const maxKeys of [1, 2, 5]) {
      const { keys, prefixes } = await all(listDir, { prefix: '', delimiter: '/', maxKeys });
      assert.deepEqual(keys, ['a-b', 'a.txt', 'b']);
      assert.deepEqual(prefixes, ['a/', 'empty/', 'models/', 'zz/']);
    }
    const models = await all(listDir, { prefix: 'models/', delimiter: '/', maxKeys: 1 });
    assert.deepEqual(models.keys, ['models/readme']);
    assert.deepEqual(models.prefixes, ['models/v1/', 'models/v2/']);
    // Other delimiters roll up inside names, and across directory levels.
    const dash = await all(listDir, { prefix: '', delimiter: '-', maxKeys: 1 });
    assert.deepEqual(dash.prefixes, ['a-']);
    assert.deepEqual(dash.keys, [...sorted, 'empty/'].sort(compareKeys).filter((k) => k !== 'a-b'), 'the empty directory is entered: its marker is a key');
    const deep = await all(listDir, { prefix: 'a', delimiter: 'y/', maxKeys: 2 });
    assert.deepEqual(deep.prefixes, ['a/y/']);
    assert.deepEqual(deep.keys, ['a-b', 'a.txt', 'a/x']);
  });

  test('bounded work: a budget of directory reads ends a page early, resumable', async () => {
    const files = Array.from({ length: 30 }, (_, i) => `d${String(i).padStart(2, '0')}/only`);
    const emptyDirs = Array.from({ length: 30 }, (_, i) => `e${String(i).padStart(2, '0')}`);
    const { listDir, stats } = tree(files, emptyDirs);
    const first = await listKeys(listDir, { prefix: '', delimiter: '', maxKeys: 1000 }, 5);
    assert.ok(first.truncated);
    assert.equal(stats.listings, 5, 'stops at the budget');
    let resume = first.next;
    const keys = first.objects.map((o) => o.key);
    for (let i = 0; i < 100 && resume; i++) {
      const page = await listKeys(listDir, { prefix: '', delimiter: '', maxKeys: 1000, resume }, 5);
      keys.push(...page.objects.map((o) => o.key));
      resume = page.truncated ? page.next : undefined;
    }
    assert.deepEqual(keys, [...files, ...emptyDirs.map((d) => `${d}/`)]);
    await assert.rejects(listKeys(tree(['a/b/c/d/e/f']).listDir, { prefix: '', delimiter: '', maxKeys: 10 }, 3), S3Error);
  });

  test('an empty directory is listed once as its marker key "dir/", wherever pages end', async () => {
    const { listDir } = tree(FILES, ['empty', 'models/none']);
    const expected = [...sorted, 'empty/', 'models/none/'].sort(compareKeys);
    for (const maxKeys of [1, 2, 3, 1000]) {
      assert.deepEqual((await all(listDir, { prefix: '', delimiter: '', maxKeys })).keys, expected, `maxKeys ${maxKeys}`);
    }
    // Dated by the listing when the source gives directories no time (S3 prefixes); else by the directory.
    const now = Date.UTC(2026, 11, 5, 12, 0, 0);
    const marker = await listKeys(listDir, { prefix: 'models/n', delimiter: '', maxKeys: 10, now });
    assert.deepEqual(marker.objects, [{ key: 'models/none/', size: 0, mtimeMs: now, etag: 'd41d8cd98f00b204e9800998ecf8427e' }]);
    const dated = async (dir: string) => (dir === '' ? [{ name: 'old', type: 'dir' as const, mtimeMs: 5000 }] : []);
    assert.deepEqual((await listKeys(dated, { prefix: '', delimiter: '', maxKeys: 10, now })).objects, [{ key: 'old/', size: 0, mtimeMs: 5000, etag: 'd41d8cd98f00b204e9800998ecf8427e' }]);
    // With a delimiter it rolls into its common prefix, as a marker object does on S3; listed by itself, it is its only key.
    const root = await listKeys(listDir, { prefix: '', delimiter: '/', maxKeys: 1000 });
    assert.ok(root.commonPrefixes.includes('empty/') && !root.objects.some((o) => o.key === 'empty/'));
    assert.deepEqual((await all(listDir, { prefix: 'empty/', delimiter: '/', maxKeys: 1000 })).keys, ['empty/']);
    assert.deepEqual((await all(listDir, { prefix: 'empty/x', delimiter: '', maxKeys: 1000 })).keys, []);
    assert.deepEqual((await all(tree([]).listDir, { prefix: '', delimiter: '', maxKeys: 1000 })).keys, [], 'an empty bucket has no marker for its root');
  });

  test('tokens, markers and key order', async () => {
    assert.deepEqual(decodeToken(encodeToken({ after: 'a/é b', subtree: true })), { after: 'a/é b', subtree: true });
    for (const bad of ['', '!!', Buffer.from('x').toString('base64url'), 'a'.repeat(3)]) assert.throws(() => decodeToken(bad), S3Error);
    assert.deepEqual(markerPosition('models/', '', '/'), { after: 'models/', subtree: true });
    assert.deepEqual(markerPosition('models/v1/m.bin', '', '/'), { after: 'models/v1/m.bin', subtree: false });
    assert.deepEqual(markerPosition('a/x', '', ''), { after: 'a/x', subtree: false });
    assert.equal(markerPosition('', '', '/'), undefined);
    assert.equal(positionMarker({ after: 'models/', subtree: true }, '/'), 'models/');
    const { listDir } = tree(FILES);
    const resumed = await listKeys(listDir, { prefix: '', delimiter: '', maxKeys: 100, resume: markerPosition(positionMarker({ after: 'a/', subtree: true }, ''), '', '') });
    assert.deepEqual(resumed.objects.map((o) => o.key), sorted.slice(sorted.indexOf('b')));
    // UTF-8 order: U+FFFD (3 bytes) sorts before U+1F600 (4 bytes), unlike UTF-16 order.
    assert.ok(compareKeys('\ufffd', '\u{1F600}') < 0);
    assert.ok(compareKeys('a', 'a/') < 0 && compareKeys('a.txt', 'a/') < 0 && compareKeys('ab', 'a/') > 0);
    assert.equal((await listKeys(listDir, { prefix: '', delimiter: '', maxKeys: 0 })).objects.length, 0);
  });
  test('a source whose directories loop for ever: the walk stops at directories whose key is 1024 bytes', async () => {
    // Every directory holds itself again ("self") and a file: keys self/f, self/self/f, …
    const listDir = async () => [{ name: 'self', type: 'dir' as const }, { name: 'f', type: 'file' as const, size: 1, mtimeMs: 0, version: 'v' }];
    const keys: string[] = [];
    let resume: Position | undefined;
    for (let page = 0; page < 100; page++) {
      const result = await listKeys(listDir, { prefix: '', delimiter: '', maxKeys: 1000, resume });
      keys.push(...result.objects.map((o) => o.key));
      if (!result.truncated) break;
      resume = result.next;
    }
    // "self/" × 204 is 1020 bytes: the deepest directory entered; "self/" × 205 is not.
    assert.equal(keys.length, 205);
    assert.equal(keys.at(-1), `${'self/'.repeat(204)}f`);
    assert.ok(keys.every((k) => Buffer.byteLength(k) <= 1024));
  });
});
