import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ownTempPrefix, readJsonState, writeFileAtomic } from './index.js';

test("reading a state file removes the temp files other processes left beside it, however fresh, and keeps this process's own", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fanout-statefile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'pins.json');
  await writeFileAtomic(file, JSON.stringify({ pinned: ['a'] }));
  const theirs = `.pins.json.4242.0.tmp`;
  const ours = `${ownTempPrefix(file)}7.tmp`;
  for (const name of [theirs, ours, '.other.json.4242.0.tmp', 'notes.tmp']) writeFileSync(join(dir, name), '{"pinn');
  assert.deepEqual(await readJsonState(file, (v) => v), { pinned: ['a'] });
  assert.deepEqual(readdirSync(dir).sort(), [ours, '.other.json.4242.0.tmp', 'notes.tmp', 'pins.json'].sort());
});

test('a temp file left under this process\'s pid by a killed process (PID 1 of a container, restarted) is removed, and never stops a write', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fanout-statefile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'policy.json');
  // Every name the killed process could have left: its temp counter went up to some number.
  for (let n = 0; n < 500; n++) writeFileSync(join(dir, `.policy.json.${process.pid}.${n}.tmp`), '{"pins": ["a"');
  assert.equal(await readJsonState(file, (v) => v), undefined);
  assert.deepEqual(readdirSync(dir), [], 'not this process\'s: removed');
  for (let n = 0; n < 500; n++) writeFileSync(join(dir, `.policy.json.${process.pid}.${n}.tmp`), '{"pins": ["a"');
  await writeFileAtomic(file, JSON.stringify({ pins: ['b'] }));
  assert.deepEqual(await readJsonState(file, (v) => v), { pins: ['b'] });
});
