import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runHook } from './hook.js';

test('a hook does nothing before onStart has recorded its group; it then runs with an empty stdin', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-hook-'));
  const ran = join(dir, 'ran');
  try {
    let before: boolean | undefined;
    const result = await runHook({
      command: `cat > ${ran}`,
      env: process.env,
      timeoutMs: 30_000,
      graceMs: 1_000,
      onStart: async () => {
        // Time enough for an ungated shell to have run the command.
        await new Promise((r) => setTimeout(r, 300));
        before = await stat(ran).then(() => true, () => false);
      },
    });
    assert.deepEqual(result, { ok: true });
    assert.equal(before, false, 'the hook ran before its group was recorded');
    assert.equal(await readFile(ran, 'utf8'), '', 'the gate word is not left on the hook\'s stdin');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
