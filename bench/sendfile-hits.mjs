#!/usr/bin/env node
// Warm hits: the sendfile path against the JS path (FANOUT_NO_SENDFILE=1), same run, same file,
// on three routes: /v1/page (curl fetches every page), /v1/data and S3 GetObject (curl fetches
// the whole file), each `--passes` times on one keep-alive connection to /dev/null. Reported per
// route and path: throughput and the worker's CPU (user+sys from /proc/PID/stat) per GiB sent,
// median of `--runs`, and the js/sendfile CPU ratio.
//
//   node bench/sendfile-hits.mjs [--size 512MiB] [--passes 4] [--runs 3] [--page-size 16MiB] [--routes page,data,s3]
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, bin, median, parseSize, timedRun as run, waitHealthy, writeRandomFile } from './common.mjs';

const args = benchArgs({ size: '512MiB', passes: '4', runs: '3', 'page-size': '16MiB', routes: 'page,data,s3' });
const routes = args.routes.split(',');
const size = parseSize(args.size);
const passes = Number(args.passes);
const runs = Number(args.runs);
const pageSize = parseSize(args['page-size']);
const TICK = 100; // USER_HZ on Linux

async function cpuSeconds(pid) {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICK; // utime, stime
}

const work = await mkdtemp(join(tmpdir(), 'fanout-bench-sendfile-'));
try {
  const srcDir = join(work, 'src');
  await mkdir(srcDir);
  await writeRandomFile(join(srcDir, 'model.bin'), size);
  const paths = ['sendfile', 'js'];
  const results = {};
  for (const route of routes) results[route] = Object.fromEntries(paths.map((p) => [p, { seconds: [], cpuPerGiB: [] }]));
  const workers = {};
  const curlList = (urls) => urls.map((u) => `url = "${u}"\noutput = "/dev/null"\n`).join('');
  for (const path of paths) {
    const port = 17450 + Math.floor(Math.random() * 1000);
    const s3Port = port + 1000;
    const env = { ...process.env };
    if (path === 'js') env.FANOUT_NO_SENDFILE = '1';
    else delete env.FANOUT_NO_SENDFILE;
    const proc = spawn(process.execPath, [bin, 'serve', srcDir, '--listen', `127.0.0.1:${port}`, '--s3-listen', `127.0.0.1:${s3Port}`, '--s3-anonymous', '--data-dir', join(work, `store-${path}`), '--page-size', args['page-size'], '--capacity', `${Math.ceil((size * 1.5) / 2 ** 20)}MiB`, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'], env });
    const url = `http://127.0.0.1:${port}`;
    await waitHealthy(`${url}/healthz`);
    const status = await (await fetch(`${url}/v1/status`)).json();
    if (status.sendPath !== path) throw new Error(`worker reports sendPath ${status.sendPath}, wanted ${path}`);
    const { version } = await (await fetch(`${url}/v1/stat/data/model.bin`)).json();
    const pages = Math.ceil(size / pageSize);
    const pageUrls = Array.from({ length: pages }, (_, i) => `${url}/v1/page/data/model.bin?v=${encodeURIComponent(version)}&size=${size}&i=${i}`);
    const list = join(work, `urls-${path}`);
    await writeFile(list, curlList(pageUrls));
    await run('curl', ['-s', '-K', list]); // warm: every page stored
    const perPass = { page: pageUrls, data: [`${url}/v1/data/data/model.bin`], s3: [`http://127.0.0.1:${s3Port}/data/model.bin`] };
    const passLists = {};
    for (const route of routes) {
      passLists[route] = join(work, `passes-${path}-${route}`);
      await writeFile(passLists[route], Array.from({ length: passes }, () => curlList(perPass[route])).join(''));
    }
    workers[path] = { proc, passLists };
  }
  const loadavg = (await readFile('/proc/loadavg', 'utf8')).trim();
  for (let r = 0; r < runs; r++) {
    for (const route of routes) {
      for (const path of paths) {
        const { proc, passLists } = workers[path];
        const cpu0 = await cpuSeconds(proc.pid);
        const seconds = await run('curl', ['-s', '-K', passLists[route]]);
        const cpu = (await cpuSeconds(proc.pid)) - cpu0;
        results[route][path].seconds.push(seconds);
        results[route][path].cpuPerGiB.push(cpu / ((size * passes) / 2 ** 30));
      }
    }
  }
  for (const { proc } of Object.values(workers)) {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
  const bytes = size * passes;
  const out = {};
  for (const [route, byPath] of Object.entries(results)) {
    out[route] = {};
    for (const [path, r] of Object.entries(byPath)) {
      out[route][path] = { GBps: +(bytes / median(r.seconds) / 1e9).toFixed(2), workerCpuSecondsPerGiB: +median(r.cpuPerGiB).toFixed(3), seconds: r.seconds.map((s) => +s.toFixed(3)), cpuPerGiB: r.cpuPerGiB.map((c) => +c.toFixed(3)) };
    }
    out[route].jsOverSendfileCpu = +(out[route].js.workerCpuSecondsPerGiB / out[route].sendfile.workerCpuSecondsPerGiB).toFixed(2);
  }
  console.log(JSON.stringify({ size, passes, runs, pageSize, loadavgAtStart: loadavg, loadavgAtEnd: (await readFile('/proc/loadavg', 'utf8')).trim(), ...out }, null, 2));
} finally {
  await rm(work, { recursive: true, force: true });
}
