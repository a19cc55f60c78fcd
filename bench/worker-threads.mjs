#!/usr/bin/env node
// Benchmark 4 of issue 10: one worker, a warm file, 4 concurrent readers, the worker started with
// --threads 1 and with --threads 2 (same run, same file, runs interleaved). Each reader is a curl
// that fetches every page of the file by /v1/page on one keep-alive connection to /dev/null (hits
// leave by sendfile on the worker's send threads). Reported: aggregate throughput (file size ×
// readers ÷ wall time of the slowest reader) and the worker's CPU (user+sys from /proc/PID/stat;
// all threads, and its JS thread alone from /proc/PID/task/PID/stat) per GiB sent, median of `--runs`, every run's figures, and the load average before and after.
//
//   node bench/worker-threads.mjs [--size 1GiB] [--readers 4] [--runs 3] [--page-size 4MiB] [--threads 1,2]
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, bin, median, parseSize, timedRun as run, waitHealthy, writeRandomFile } from './common.mjs';

const args = benchArgs({ size: '1GiB', readers: '4', runs: '3', 'page-size': '4MiB', threads: '1,2' });
const size = parseSize(args.size);
const readers = Number(args.readers);
const runs = Number(args.runs);
const pageSize = parseSize(args['page-size']);
const settings = args.threads.split(',').map(Number);
const TICK = 100; // USER_HZ on Linux

async function cpuSeconds(pid, task) {
  const fields = (await readFile(task ? `/proc/${pid}/task/${task}/stat` : `/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICK; // utime, stime
}

/** The worker's CPU seconds: all threads, and its JS (main) thread alone. */
const cpuOf = async (pid) => ({ all: await cpuSeconds(pid), js: await cpuSeconds(pid, pid) });

const loadavg = async () => (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');

const work = await mkdtemp(join(tmpdir(), 'fanout-bench-threads-'));
const workers = {};
try {
  const srcDir = join(work, 'src');
  await mkdir(srcDir);
  await writeRandomFile(join(srcDir, 'model.bin'), size);
  for (const threads of settings) {
    const port = 17450 + Math.floor(Math.random() * 1000);
    const proc = spawn(process.execPath, [bin, 'serve', srcDir, '--listen', `127.0.0.1:${port}`, '--s3-listen', 'off', '--data-dir', join(work, `store-${threads}`), '--page-size', args['page-size'], '--capacity', `${Math.ceil((size * 1.5) / 2 ** 20)}MiB`, '--log-level', 'warn', '--threads', String(threads)], { stdio: ['ignore', 'ignore', 'inherit'] });
    const url = `http://127.0.0.1:${port}`;
    await waitHealthy(`${url}/healthz`);
    const status = await (await fetch(`${url}/v1/status`)).json();
    if (status.threads !== threads || status.sendPath !== 'sendfile') throw new Error(`worker reports threads ${status.threads}, sendPath ${status.sendPath}; wanted ${threads}, sendfile`);
    const { version } = await (await fetch(`${url}/v1/stat/data/model.bin`)).json();
    const pages = Math.ceil(size / pageSize);
    const list = join(work, `urls-${threads}`);
    await writeFile(list, Array.from({ length: pages }, (_, i) => `url = "${url}/v1/page/data/model.bin?v=${encodeURIComponent(version)}&size=${size}&i=${i}"\noutput = "/dev/null"\n`).join(''));
    await run('curl', ['-sf', '-K', list]); // warm: every page stored
    workers[threads] = { proc, list, seconds: [], GBps: [], cpuPerGiB: [], jsCpuPerGiB: [] };
  }
  const loadBefore = await loadavg();
  for (let r = 0; r < runs; r++) {
    for (const threads of settings) {
      const w = workers[threads];
      const cpu0 = await cpuOf(w.proc.pid);
      const started = process.hrtime.bigint();
      await Promise.all(Array.from({ length: readers }, () => run('curl', ['-sf', '-K', w.list])));
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const cpu1 = await cpuOf(w.proc.pid);
      const gib = (size * readers) / 2 ** 30;
      w.seconds.push(seconds);
      w.GBps.push((size * readers) / seconds / 1e9);
      w.cpuPerGiB.push((cpu1.all - cpu0.all) / gib);
      w.jsCpuPerGiB.push((cpu1.js - cpu0.js) / gib);
    }
  }
  const out = { size, readers, runs, pageSize, loadavgBefore: loadBefore, loadavgAfter: await loadavg() };
  for (const threads of settings) {
    const w = workers[threads];
    out[`threads=${threads}`] = {
      GBps: +median(w.GBps).toFixed(3),
      workerCpuSecondsPerGiB: +median(w.cpuPerGiB).toFixed(3),
      jsThreadCpuSecondsPerGiB: +median(w.jsCpuPerGiB).toFixed(3),
      seconds: w.seconds.map((s) => +s.toFixed(3)),
      cpuPerGiB: w.cpuPerGiB.map((c) => +c.toFixed(3)),
    };
  }
  if (settings.length === 2) out.ratio = +(out[`threads=${settings[1]}`].GBps / out[`threads=${settings[0]}`].GBps).toFixed(3);
  console.log(JSON.stringify(out, null, 2));
} finally {
  for (const { proc } of Object.values(workers)) {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
  await rm(work, { recursive: true, force: true });
}
