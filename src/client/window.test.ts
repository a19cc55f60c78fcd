import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultWindow } from './client.js';

test("a read's default window is two pages per worker, never fewer than 6 nor more than 8", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 40].map(defaultWindow), [6, 6, 6, 6, 8, 8, 8]);
});
