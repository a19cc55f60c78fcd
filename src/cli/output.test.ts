import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fanoutPath, plural } from './output.js';

test('counts read as English: one member, no members, two members', () => {
  assert.equal(plural(1, 'member'), '1 member');
  assert.equal(plural(0, 'member'), '0 members');
  assert.equal(plural(2, 'cached page'), '2 cached pages');
});

test('JSON paths have one form: /MOUNT/PATH without a trailing slash', () => {
  assert.equal(fanoutPath('data', 'nested/a.txt'), '/data/nested/a.txt');
  assert.equal(fanoutPath('data', 'nested/'), '/data/nested');
  assert.equal(fanoutPath('data', ''), '/data');
});
