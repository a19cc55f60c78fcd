import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ago, bytes, percent, plural, rate } from './app/format.js';

test('the page prints sizes in binary units with three significant digits, and nothing to divide as "-"', () => {
  assert.equal(bytes(0), '0 B');
  assert.equal(bytes(1023), '1023 B');
  assert.equal(bytes(1024), '1.00 KiB');
  assert.equal(bytes(64 * 1024 * 1024), '64.0 MiB');
  assert.equal(bytes(150 * 1024 ** 3), '150 GiB');
  assert.equal(rate(2 * 1024 * 1024), '2.00 MiB/s');
  assert.equal(percent(1, 3), '33.3%');
  assert.equal(percent(0, 0), '-');
  assert.equal(plural(1, 'host'), '1 host');
  assert.equal(plural(1000, 'host'), '1,000 hosts');
  assert.equal(ago(3_000), '3 s ago');
  assert.equal(ago(5 * 60_000), '5 min ago');
});
