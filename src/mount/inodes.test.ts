import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InodeTable, ROOT_INO } from './inodes.js';

test('a path keeps its number across lookups, forgets and listings', () => {
  const table = new InodeTable();
  assert.equal(table.get(ROOT_INO)?.path, '');
  const listed = table.numberFor('data/a.bin');
  const node = table.remember('data/a.bin', false);
  assert.equal(node.ino, listed);
  assert.equal(table.remember('data/a.bin', false), node);
  table.forget(node.ino, 1);
  assert.equal(table.get(node.ino), node, 'one kernel reference is left');
  table.forget(node.ino, 1);
  assert.equal(table.get(node.ino), undefined, 'gone with its last reference');
  assert.equal(table.remember('data/a.bin', false).ino, listed, 'and the same number when looked up again');
  assert.notEqual(table.numberFor('data/b.bin'), listed);
});

test('the root is never forgotten', () => {
  const table = new InodeTable();
  table.forget(ROOT_INO, 10);
  assert.equal(table.get(ROOT_INO)?.isDir, true);
});

test("each version of a file is an inode of its own; an old one lives on for its readers and never takes the path's current one with it", () => {
  const table = new InodeTable();
  const v1 = table.remember('data/a.bin', false, 'v1');
  assert.equal(table.remember('data/a.bin', false, 'v1'), v1);
  const v2 = table.remember('data/a.bin', false, 'v2');
  assert.notEqual(v2.ino, v1.ino);
  assert.equal(table.find('data/a.bin'), v2, 'the latest lookup is the current one');
  assert.equal(table.get(v1.ino), v1, 'the old one stays while the kernel holds it');
  assert.equal(table.numberFor('data/a.bin', 'v2'), v2.ino);
  table.forget(v1.ino, 2);
  assert.equal(table.get(v1.ino), undefined);
  assert.equal(table.find('data/a.bin'), v2);
  // A lookup the addon answered for a number forgotten meanwhile brings it back, version unknown.
  table.rememberNumber(v1.ino, 'data/a.bin');
  assert.equal(table.get(v1.ino)?.version, undefined);
  assert.equal(table.find('data/a.bin'), v2);
});
