import { test } from 'node:test';
import assert from 'node:assert/strict';
import { plural } from './output.js';

test('counts read as English: one member, no members, two members', () => {
  assert.equal(plural(1, 'member'), '1 member');
  assert.equal(plural(0, 'member'), '0 members');
  assert.equal(plural(2, 'cached page'), '2 cached pages');
});
