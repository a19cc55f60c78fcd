import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readJsonState, writeFileAtomic } from './index.js';

test("reading a state file removes the temp files other processes left beside it, however fresh, and keeps this process's own", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fanout-statefile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'pins.json');
  await writeFileAtomic(file, JSON.stringify({ pinned: ['a'] }));
  const theirs = `.pins.json.4242.0.tmp`;
  const ours = `.pins.json.${process.pid}.7.tmp`;
  for (const name of [theirs, ours, '.other.json.4242.0.tmp', 'notes.tmp']) writeFileSync(join(dir, name), '{"pinn');
  assert.deepEqual(await readJsonState(file, (v) => v), { pinned: ['a'] });
  assert.deepEqual(readdirSync(dir).sort(), [ours, '.other.json.4242.0.tmp', 'notes.tmp', 'pins.json'].sort());
});
