import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readJsonState, writeFileAtomic, type CorruptStateFile } from '../lib/statefile/index.js';
import { endGroup, groupAlive } from './hook.js';
import { bootId, procStat } from '../lib/procstat/index.js';

/**
 * DIR/.hook-running.json: the process group of the on-switch hook running now. The hook runs
 * detached, so an agent killed with SIGKILL leaves it running, and its switch stays owed: the
 * next start would run the hook again beside the old one (two service restarts at once). The
 * next start reads this file and ends that group first.
 */
export interface RunningHook {
  /** The hook's shell: the leader of its process group. */
  pgid: number;
  /** The leader's start time and boot: a pid reused since by another process is not taken for it. */
  startTime: string;
  bootId: string;
  version: string;
}

const FILE = '.hook-running.json';

/** Written under a temporary name and renamed: a kill never leaves a torn record. */
export async function recordRunningHook(dir: string, pgid: number, version: string): Promise<void> {
  const record: RunningHook = { pgid, startTime: procStat(pgid)?.startTime ?? '-', bootId: bootId(), version };
  await writeFileAtomic(join(dir, FILE), JSON.stringify(record));
}

export async function forgetRunningHook(dir: string): Promise<void> {
  await rm(join(dir, FILE), { force: true });
}

/**
 * Ends the hook an earlier agent of `dir` left running (SIGTERM to its group, SIGKILL after
 * `graceMs`) and forgets it; says what it ended, or undefined when nothing was left. Only while
 * its shell still runs: a hook whose shell exited by itself is done, and what it left in the
 * background is its business (as for a hook that ends while the agent runs). Call it only while
 * holding the directory's lock, or it may end the hook of the agent that holds it.
 */
export async function endLeftoverHook(dir: string, graceMs: number, onCorrupt?: (report: CorruptStateFile) => void): Promise<string | undefined> {
  const record = await readJsonState(join(dir, FILE), parseRunningHook, { onCorrupt });
  if (!record) return undefined;
  const leader = procStat(record.pgid);
  const same = leader !== undefined && leader.state !== 'Z' && leader.pgrp === record.pgid && leader.startTime === record.startTime && record.bootId === bootId();
  let ended: string | undefined;
  if (same && groupAlive(record.pgid)) {
    await endGroup(record.pgid, graceMs);
    ended = `ended the on-switch hook for ${record.version} left running by an earlier agent (process group ${record.pgid}) before running any hook`;
  }
  await forgetRunningHook(dir);
  return ended;
}

function parseRunningHook(value: unknown): RunningHook {
  const v = value as Partial<RunningHook> | null;
  if (!v || typeof v !== 'object' || !Number.isInteger(v.pgid) || v.pgid! <= 1 || typeof v.startTime !== 'string' || typeof v.bootId !== 'string' || typeof v.version !== 'string') {
    throw new Error('not a running hook record');
  }
  return v as RunningHook;
}
