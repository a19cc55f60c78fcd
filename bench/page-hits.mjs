#!/usr/bin/env node
// The worker's fixed CPU cost per warm page request (/v1/page hits sent by the kernel), against
// nginx sending the same page files (sendfile on) in the same run. One worker per checkout
// (`--fanout A,B`: compare a base and a branch side by side; default this checkout), a file of
// SIZE in pages of PAGE bytes, all stored first; then each pass is one curl (one keep-alive
// connection) fetching every page `--passes` times, to /dev/null. Small pages magnify the fixed
// cost: at 1 MiB (the smallest page size) the bytes cost little next to the request. Reported per server: CPU (user+sys,
// all threads, /proc/PID/stat) per request in µs, median and spread over `--runs`, the passes
// interleaved across servers so load from others falls on each alike. `--cpu-prof DIR` starts the
// workers with --cpu-prof (written when they exit on SIGTERM); `--perf-basic-prof` for perf.
//
//   node bench/page-hits.mjs [--size 256MiB] [--page-size 1MiB] [--passes 8] [--runs 5] [--fanout CHECKOUT,...] [--cpu-prof DIR] [--perf-basic-prof]
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { processTreeCpu } from './cpu.mjs';
import { benchArgs, bin, median, parseSize, timedRun as run, waitFor, waitHealthy, writeRandomFile } from './common.mjs';

const args = benchArgs({ size: '256MiB', 'page-size': '1MiB', passes: '8', runs: '5', fanout: '', 'cpu-prof': '', 'perf-basic-prof': '' });
const SIZE = parseSize(args.size);
const PAGE = parseSize(args['page-size']);
const PASSES = Number(args.passes);
const RUNS = Number(args.runs);
const checkouts = args.fanout ? args.fanout.split(',') : [''];
const PAGES = Math.ceil(SIZE / PAGE);
const REQUESTS = PAGES * PASSES;

/** CPU seconds of a process's main thread (the JS thread of a worker), from /proc/PID/task/PID/stat. */
async function mainThreadCpu(pid) {
  const text = await readFile(`/proc/${pid}/task/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, USER_HZ ticks
}

const curlList = (urls) => urls.map((u) => `url = "${u}"\noutput = "/dev/null"\n`).join('');

async function filesUnder(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath ?? entry.path, entry.name));
  }
  return out;
}

async function startWorker(work, srcDir, name, checkout) {
  const port = 18450 + Math.floor(Math.random() * 1000);
  const flags = [];
  if (args['cpu-prof']) flags.push('--cpu-prof', '--cpu-prof-dir', join(args['cpu-prof'], name));
  if (args['perf-basic-prof']) flags.push('--perf-basic-prof');
  const dataDir = join(work, `store-${name}`);
  const proc = spawn(process.execPath, [...flags, checkout ? join(checkout, 'bin/fanout.js') : bin, 'serve', srcDir, '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--page-size', args['page-size'], '--capacity', `${Math.ceil((SIZE * 1.5) / 2 ** 20)}MiB`, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  proc.once('exit', (code, signal) => code && process.stderr.write(`worker ${name} exited ${code ?? signal}\n`));
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(`${url}/healthz`);
  const { sendPath } = await (await fetch(`${url}/v1/status`)).json();
  const { version } = await (await fetch(`${url}/v1/stat/data/model.bin`)).json();
  const pageUrls = Array.from({ length: PAGES }, (_, i) => `${url}/v1/page/data/model.bin?v=${encodeURIComponent(version)}&size=${SIZE}&i=${i}`);
  await writeFile(join(work, `warm-${name}`), curlList(pageUrls));
  await run('curl', ['-sf', '-K', join(work, `warm-${name}`)]); // every page stored
  const list = join(work, `pass-${name}`);
  await writeFile(list, Array.from({ length: PASSES }, () => curlList(pageUrls)).join(''));
  return { name, pid: proc.pid, proc, list, dataDir, sendPath };
}

async function startNginx(work, root) {
  const dir = join(work, 'nginx');
  await mkdir(dir);
  const port = 19450 + Math.floor(Math.random() * 1000);
  await writeFile(join(dir, 'nginx.conf'), `${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nevents { worker_connections 64; }\nhttp {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  server { listen 127.0.0.1:${port}; root ${root}; }\n}\n`);
  const proc = spawn('/usr/sbin/nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitFor('nginx', async () => (await fetch(`http://127.0.0.1:${port}/`), true)); // any answer: it listens
  return { port, proc };
}

const work = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'fanout-bench-hits-'));
const servers = [];
try {
  const srcDir = join(work, 'src');
  await mkdir(srcDir);
  await writeRandomFile(join(srcDir, 'model.bin'), SIZE);
  const workers = [];
  for (const [i, checkout] of checkouts.entries()) workers.push(await startWorker(work, srcDir, checkouts.length > 1 ? `w${i}` : 'worker', checkout));
  servers.push(...workers);
  // nginx sends the first worker's page files: the same bytes in the same number of files.
  if (existsSync('/usr/sbin/nginx')) {
    const pageFiles = (await filesUnder(workers[0].dataDir)).filter((f) => (statSync(f).size === PAGE || statSync(f).size === SIZE % PAGE) && !relative(workers[0].dataDir, f).startsWith('tmp'));
    const nginx = await startNginx(work, workers[0].dataDir);
    const urls = pageFiles.slice(0, PAGES).map((f) => `http://127.0.0.1:${nginx.port}/${relative(workers[0].dataDir, f)}`);
    const list = join(work, 'pass-nginx');
    await writeFile(list, Array.from({ length: PASSES }, () => curlList(urls)).join(''));
    servers.push({ name: 'nginx', pid: nginx.proc.pid, proc: nginx.proc, list, tree: true, files: urls.length });
  }
  const results = Object.fromEntries(servers.map((s) => [s.name, { us: [], jsUs: [], seconds: [] }]));
  const loadavg = (await readFile('/proc/loadavg', 'utf8')).trim();
  for (let r = 0; r < RUNS; r++) {
    for (const s of r % 2 ? [...servers].reverse() : servers) {
      const [cpu0, js0] = [await processTreeCpu(s.pid), await mainThreadCpu(s.pid)];
      const seconds = await run('curl', ['-sf', '-K', s.list]);
      const cpu = (await processTreeCpu(s.pid)) - cpu0;
      results[s.name].us.push((cpu / REQUESTS) * 1e6);
      results[s.name].jsUs.push((((await mainThreadCpu(s.pid)) - js0) / REQUESTS) * 1e6);
      results[s.name].seconds.push(seconds);
    }
  }
  console.log(`${REQUESTS} page requests a pass (${PAGES} pages × ${PAGE} bytes × ${PASSES}), one connection, ${RUNS} runs; load average ${loadavg} → ${(await readFile('/proc/loadavg', 'utf8')).trim()}`);
  for (const s of servers) {
    const r = results[s.name];
    const label = s.name === 'nginx' ? `nginx (${s.files} page files)` : `${s.name} ${checkouts[workers.indexOf(s)] || 'this checkout'} (${s.sendPath})`;
    const sorted = [...r.us].sort((a, b) => a - b);
    console.log(`${label}: CPU per request ${median(r.us).toFixed(0)} µs (${sorted.map((u) => u.toFixed(0)).join(' ')}), of it the main thread ${median(r.jsUs).toFixed(0)} µs, wall per pass ${median(r.seconds).toFixed(2)} s`);
  }
} finally {
  for (const s of servers) {
    s.proc.kill('SIGTERM');
    await new Promise((r) => (s.proc.exitCode !== null || s.proc.signalCode ? r() : s.proc.once('exit', r)));
  }
  await rm(work, { recursive: true, force: true });
}
