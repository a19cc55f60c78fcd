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
