import { readFileSync } from 'node:fs';

/**
 * What /proc says of a process, to tell it from a later one given the same pid: a pid names a
 * process only together with its start time (and the boot it started in).
 */
export interface ProcStat {
  /** R, S, D, Z… */
  state: string;
  /** Its process group. */
  pgrp: number;
  /** Clock ticks after boot (/proc/PID/stat, field 22). */
  startTime: string;
}

export function procStat(pid: number | 'self'): ProcStat | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] ?? '?', pgrp: Number(fields[2]), startTime: fields[19] ?? '-' };
  } catch {
    return undefined;
  }
}

/**
 * When a process started, or '-' when /proc does not say (gone, or no /proc). `self`: this process,
 * whatever /proc is mounted: in a PID namespace whose /proc is the parent's (`unshare --pid`
 * without `--mount-proc`), /proc/<its own pid> is another process (PID 1: the host's init).
 */
export function startTime(pid: number | 'self'): string {
  return procStat(pid)?.startTime ?? '-';
}

/** This boot's id: start times count from boot, so one recorded before a reboot means nothing after. */
export function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '-';
  }
}
