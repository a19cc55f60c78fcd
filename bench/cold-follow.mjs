#!/usr/bin/env node
// Cold against warm on one worker, and how a fill reaches its waiters (issue 10, "cold stays as
// good as warm"): `readers` curls fetch every page of one file by /v1/page at once (each on one
// keep-alive connection, to /dev/null) from a worker over a local directory whose source budget
// is `--rate`. Per run and per mode, a fresh worker and store: the cold pass (every page read
// once from the source, streamed to every reader while it arrives), then the warm pass (hits by
// sendfile). Modes, interleaved within each run:
//   follow — waiters are sent the fill from its page file by sendfile (the default);
//   js     — FANOUT_NO_FILL_FOLLOW=1: waiters are written the fill's buffer by JS (before this work).
// Reported per mode: wall seconds cold and warm, cold ÷ warm, and the worker's CPU seconds (user+sys
// of all its threads, from /proc/PID/stat) per GiB sent, cold and warm; medians of `--runs`, every
// run's figures, and the load average before and after.
//
//   node bench/cold-follow.mjs [--size 512MiB] [--readers 8] [--rate 350MB/s] [--runs 3] [--page-size 4MiB] [--modes follow,js]
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, bin, median, parseSize, timedRun as run, waitHealthy, writeRandomFile } from './common.mjs';

const args = benchArgs({ size: '512MiB', readers: '8', rate: '350MB/s', runs: '3', 'page-size': '4MiB', modes: 'follow,js' });
const size = parseSize(args.size);
const readers = Number(args.readers);
const runs = Number(args.runs);
const pageSize = parseSize(args['page-size']);
const modes = args.modes.split(',');
const TICK = 100; // USER_HZ on Linux

async function cpuSeconds(pid) {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICK; // utime, stime
}
/** Wake-ups of all the process's threads so far: their voluntary context switches (each a sleep). */
async function wakeups(pid) {
  let count = 0;
  for (const task of await readdir(`/proc/${pid}/task`)) {
    const status = await readFile(`/proc/${pid}/task/${task}/status`, 'utf8').catch(() => '');
    count += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  }
  return count;
}
const loadavg = async () => (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');

/** Every reader fetches every page at once; returns wall seconds and the worker's CPU seconds. */
async function pass(proc, list) {
  const cpu0 = await cpuSeconds(proc.pid);
  const wakeups0 = await wakeups(proc.pid);
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: readers }, () => run('curl', ['-sf', '--max-time', '600', '-K', list])));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { seconds, cpu: (await cpuSeconds(proc.pid)) - cpu0, wakeups: (await wakeups(proc.pid)) - wakeups0 };
}

const work = await mkdtemp(join(tmpdir(), 'fanout-bench-coldfollow-'));
const results = Object.fromEntries(modes.map((m) => [m, { cold: [], warm: [], coldCpuPerGiB: [], warmCpuPerGiB: [], ratio: [], coldWakeupsPerGiB: [], warmWakeupsPerGiB: [] }]));
try {
  const srcDir = join(work, 'src');
  await mkdir(srcDir);
  await writeRandomFile(join(srcDir, 'model.bin'), size);
  const loadBefore = await loadavg();
  const gib = (size * readers) / 2 ** 30;
  for (let r = 0; r < runs; r++) {
    for (const mode of modes) {
      const port = 17450 + Math.floor(Math.random() * 1000);
      const store = join(work, `store-${mode}-${r}`);
      const env = { ...process.env, ...(mode === 'js' ? { FANOUT_NO_FILL_FOLLOW: '1' } : {}) };
      const proc = spawn(process.execPath, [bin, 'serve', srcDir, '--listen', `127.0.0.1:${port}`, '--s3-listen', 'off', '--data-dir', store, '--page-size', args['page-size'], '--capacity', `${Math.ceil((size * 1.5) / 2 ** 20)}MiB`, '--source-rate', args.rate, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'], env });
      try {
        const url = `http://127.0.0.1:${port}`;
        await waitHealthy(`${url}/healthz`);
        const { version } = await (await fetch(`${url}/v1/stat/data/model.bin`)).json();
        const list = join(work, `urls-${mode}-${r}`);
        const pages = Math.ceil(size / pageSize);
        await writeFile(list, Array.from({ length: pages }, (_, i) => `url = "${url}/v1/page/data/model.bin?v=${encodeURIComponent(version)}&size=${size}&i=${i}"\noutput = "/dev/null"\n`).join(''));
        const cold = await pass(proc, list);
        const warm = await pass(proc, list);
        const out = results[mode];
        out.cold.push(cold.seconds);
        out.warm.push(warm.seconds);
        out.coldCpuPerGiB.push(cold.cpu / gib);
        out.warmCpuPerGiB.push(warm.cpu / gib);
        out.ratio.push(cold.seconds / warm.seconds);
        out.coldWakeupsPerGiB.push(cold.wakeups / gib);
        out.warmWakeupsPerGiB.push(warm.wakeups / gib);
      } finally {
        proc.kill('SIGTERM');
        await new Promise((res) => proc.once('exit', res));
        await rm(store, { recursive: true, force: true });
      }
    }
  }
  const round = (xs) => xs.map((x) => +x.toFixed(3));
  const report = { size, readers, rate: args.rate, pageSize, runs, loadavgBefore: loadBefore, loadavgAfter: await loadavg() };
  for (const mode of modes) {
    const m = results[mode];
    report[mode] = {
      coldSeconds: +median(m.cold).toFixed(3),
      warmSeconds: +median(m.warm).toFixed(3),
      coldOverWarm: +median(m.ratio).toFixed(3),
      coldCpuSecondsPerGiB: +median(m.coldCpuPerGiB).toFixed(3),
      warmCpuSecondsPerGiB: +median(m.warmCpuPerGiB).toFixed(3),
      // The worker's threads' sleeps (voluntary context switches) per GiB sent: its wake-ups.
      coldWakeupsPerGiB: Math.round(median(m.coldWakeupsPerGiB)),
      warmWakeupsPerGiB: Math.round(median(m.warmWakeupsPerGiB)),
      runs: { cold: round(m.cold), warm: round(m.warm), coldCpuPerGiB: round(m.coldCpuPerGiB), warmCpuPerGiB: round(m.warmCpuPerGiB) },
    };
  }
  console.log(JSON.stringify(report, null, 2));
} finally {
  await rm(work, { recursive: true, force: true });
}
