// CPU seconds of processes, from /proc: what a benchmark charges to each side of a transfer.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';

const TICKS_PER_SECOND = 100; // USER_HZ: 100 on every Linux this runs on (getconf CLK_TCK)

/** utime, stime, cutime, cstime of /proc/PID/stat, in seconds (after the comm field, which may hold spaces). */
function statTimes(text) {
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is the state (field 3); utime is field 14 → fields[11].
  const [utime, stime, cutime, cstime] = fields.slice(11, 15).map(Number);
  return { own: (utime + stime) / TICKS_PER_SECOND, children: (cutime + cstime) / TICKS_PER_SECOND };
}

async function childrenOf(pid) {
  const out = [];
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => []);
  for (const tid of tasks) {
    const text = await readFile(`/proc/${pid}/task/${tid}/children`, 'utf8').catch(() => '');
    out.push(...text.split(' ').filter(Boolean).map(Number));
  }
  return out;
}

/**
 * CPU seconds (user + system, all threads) of a long-lived process and all its descendants,
 * including descendants already reaped: take it before and after, and the difference is what
 * the tree spent in between (nginx's master and workers; a worker and any processes it runs).
 */
export async function processTreeCpu(pid) {
  let total = 0;
  for (const queue = [pid]; queue.length > 0; ) {
    const next = queue.pop();
    const text = await readFile(`/proc/${next}/stat`, 'utf8').catch(() => undefined);
    if (text === undefined) continue; // exited meanwhile: its time is in its parent's children
    const { own, children } = statTimes(text);
    total += own + children;
    queue.push(...(await childrenOf(next)));
  }
  return total;
}

/**
 * Runs a shell command line; resolves with its wall time and the CPU seconds of every process
 * it ran (the shell reports its reaped children's times from /proc/$$/stat before it exits).
 */
export function runMeasured(command) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const proc = spawn('sh', ['-c', `${command}\nstatus=$?\ncat /proc/$$/stat\nexit $status`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (chunk) => (out += chunk));
    proc.once('error', reject);
    proc.once('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) return reject(new Error(`${command} exited ${code}`));
      resolve({ seconds, cpu: statTimes(out.trim().split('\n').pop()).children });
    });
  });
}

/**
 * The machine's busy and idle CPU seconds so far (all cores, from /proc/stat). Busy includes the
 * kernel work no process is charged for (softirq on ksoftirqd: loopback receive under load).
 */
export function machineCpu() {
  const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = ticks;
  const sample = { busy: (user + nice + system + irq + softirq + steal) / TICKS_PER_SECOND, idle: (idle + iowait) / TICKS_PER_SECOND };
  return { ...sample, since: (earlier) => ({ busy: sample.busy - earlier.busy, idle: sample.idle - earlier.idle }) };
}
