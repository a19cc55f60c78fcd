import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { procStat } from '../lib/procstat/index.js';
import { endLeftoverHook, recordRunningHook } from './runninghook.js';

/** A stand-in for a hook left running: a shell leading its own group, with a child. */
function leftoverGroup(): number {
  const child = spawn('/bin/sh', ['-c', 'sleep 600 & wait'], { detached: true, stdio: 'ignore' });
  child.unref();
  return child.pid!;
}

const gone = (pid: number) => {
  const s = procStat(pid);
  return s === undefined || s.state === 'Z';
};

async function until(check: () => boolean): Promise<boolean> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
  return check();
}

test('a recorded hook still running is ended with its group, and forgotten', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-runninghook-'));
  const pgid = leftoverGroup();
  try {
    await until(() => procStat(pgid)?.pgrp === pgid);
    await recordRunningHook(dir, pgid, 'v7');
    const said = await endLeftoverHook(dir, 1000);
    assert.match(said ?? '', /hook for v7 .* \(process group \d+\)/);
    assert.ok(await until(() => gone(pgid)), 'the shell ended');
    await assert.rejects(stat(join(dir, '.hook-running.json')));
    assert.equal(await endLeftoverHook(dir, 1000), undefined, 'nothing left the second time');
  } finally {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // ended
    }
    await rm(dir, { recursive: true, force: true });
  }
});

test('a record whose pid now names another process (another start time or boot) ends nothing', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-runninghook-'));
  const pgid = leftoverGroup();
  try {
    await until(() => procStat(pgid)?.pgrp === pgid);
    await recordRunningHook(dir, pgid, 'v7');
    const record = JSON.parse(await readFile(join(dir, '.hook-running.json'), 'utf8'));
    for (const reused of [{ ...record, startTime: String(Number(record.startTime) - 1) }, { ...record, bootId: 'another-boot' }]) {
      await writeFile(join(dir, '.hook-running.json'), JSON.stringify(reused));
      assert.equal(await endLeftoverHook(dir, 1000), undefined);
      assert.ok(!gone(pgid), 'the process given the pid since runs on');
      await assert.rejects(stat(join(dir, '.hook-running.json')), 'the stale record is forgotten');
    }
  } finally {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // ended
    }
    await rm(dir, { recursive: true, force: true });
  }
});
