import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Open-file limits of running processes, for the fault tests that run one out of descriptors. */

/** Whether this machine can change a running process's limits (Linux, util-linux `prlimit`). */
export function hasPrlimit(): boolean {
  try {
    execFileSync('prlimit', ['--version'], { stdio: 'ignore' });
    return process.platform === 'linux';
  } catch {
    return false;
  }
}

/** The lowest descriptor number `pid` does not use: the number its next open would get. */
export function lowestFreeFd(pid: number): number {
  const used = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  let fd = 0;
  while (used.has(fd)) fd++;
  return fd;
}

/** The open-file limit under which `pid` has exactly `free` descriptor numbers left. */
export function limitLeaving(pid: number, free: number): number {
  const used = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  let fd = 0;
  for (let left = free; left > 0; fd++) if (!used.has(fd)) left--;
  return fd;
}

/** Sets the soft open-file limit of `pid`, keeping its hard one. */
export function setSoftNofile(pid: number, soft: number): void {
  const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))![1]!;
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:${hard === 'unlimited' ? 'unlimited' : hard}`]);
}
