#!/usr/bin/env node
// Benchmark 1 of issue 10: one client, warm, a big file to /dev/null.
//   - curl from nginx (Debian nginx, sendfile, started here over the same file): the baseline
//   - `fanout cat` from one worker (`fanout serve` over the directory, pages already cached)
//   - curl of the worker's `/v1/data`
// Wall time and CPU seconds per GiB of every process on each side (nginx's processes + curl;
// the worker + the CLI; the worker + curl), as ratios to nginx+curl measured in the same run
// (these machines are shared and noisy: only same-run ratios mean anything), median of --runs;
// and the machine's busy CPU during each run (/proc/stat: includes softirq work on ksoftirqd that
// no process is charged for, but also anything else running: meaningful on a quiet machine only).
// Then the CLI's fixed cost: `fanout cat` of a 1-byte file and `fanout --help`, median of
// --fixed-runs (and `fanout cat` and `node -e 0` again without NODE_EXTRA_CA_CERTS, where it is set).
//
//   node bench/single-client.mjs [--size 4GiB] [--runs 3] [--fixed-runs 10] [--page-size 4MiB]
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { benchArgs, bin, median, parseSize, root, waitFor, waitHealthy, writeRandomFile } from './common.mjs';
import { machineCpu, processTreeCpu, runMeasured } from './cpu.mjs';

const args = benchArgs({ size: '4GiB', runs: '3', 'fixed-runs': '10', 'page-size': '4MiB' });
const size = parseSize(args.size);
const runs = Number(args.runs);
const fixedRuns = Number(args['fixed-runs']);
const GiB = 2 ** 30;
const NGINX = process.env.NGINX ?? '/usr/sbin/nginx';

const loadavg = async () => (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
const freePort = () => 20000 + Math.floor(Math.random() * 20000);

/** nginx over `dir` on a free port, with its own config: sendfile, root (the temp dir is 0700). */
async function startNginx(work, dir) {
  const prefix = join(work, 'nginx');
  await mkdir(prefix, { recursive: true });
  const port = freePort();
  const conf = join(prefix, 'nginx.conf');
  await writeFile(
    conf,
    `daemon off;
user root;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  server { listen 127.0.0.1:${port}; root ${dir}; }
}
`,
  );
  const proc = spawn(NGINX, ['-p', prefix, '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((r) => proc.once('exit', r));
  proc.once('error', (err) => process.stderr.write(`nginx: ${err.message} (install it: scripts/install-system-deps.sh)\n`));
  await waitFor('nginx', async () => (await fetch(`http://127.0.0.1:${port}/`)).status !== 0);
  return { url: `http://127.0.0.1:${port}`, pid: proc.pid, stop: async () => (proc.kill('SIGQUIT'), await exited) };
}

async function startWorker(work, dir) {
  const port = freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const argv = [bin, 'serve', dir, '--listen', `127.0.0.1:${port}`, '--s3-listen', 'off', '--data-dir', join(work, 'store'), '--page-size', args['page-size'], '--capacity', `${Math.ceil((size * 1.5) / 2 ** 20)}MiB`, '--log-level', 'warn'];
  const proc = spawn(process.execPath, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((r) => proc.once('exit', r));
  await waitHealthy(`${endpoint}/healthz`);
  return { endpoint, pid: proc.pid, stop: async () => (proc.kill('SIGTERM'), await exited) };
}

/** One timed run of `command` (a shell line) while `server` serves: wall, and CPU of both sides. */
async function measure(command, serverPid) {
  const before = await processTreeCpu(serverPid);
  const machineBefore = machineCpu();
  const client = await runMeasured(command);
  // The machine's busy CPU too: it counts the loopback's receive work run on ksoftirqd, which
  // neither side's /proc figure holds (and which moves between runs with the load).
  const machine = machineCpu().since(machineBefore).busy;
  const server = (await processTreeCpu(serverPid)) - before;
  return { seconds: client.seconds, clientCpu: client.cpu, serverCpu: server, cpu: client.cpu + server, machineCpu: machine };
}

/** Median wall time; CPU of the run with the median CPU total, split as that run split it. */
function summarize(samples) {
  const mid = [...samples].sort((a, b) => a.cpu - b.cpu)[Math.floor(samples.length / 2)];
  return { seconds: median(samples.map((s) => s.seconds)), cpuSeconds: mid.cpu, clientCpuSeconds: mid.clientCpu, serverCpuSeconds: mid.serverCpu, machineCpuSeconds: median(samples.map((s) => s.machineCpu)), samples };
}

const work = await mkdtemp(join(tmpdir(), 'fanout-bench-'));
const stops = [];
try {
  await chmod(work, 0o755);
  const srcDir = join(work, 'src');
  await mkdir(srcDir);
  const file = join(srcDir, 'model.bin');
  process.stderr.write(`writing a ${args.size} random file…\n`);
  await writeRandomFile(file, size);
  await writeFile(join(srcDir, 'one.bin'), 'x');

  const nginx = await startNginx(work, srcDir);
  stops.push(nginx.stop);
  const worker = await startWorker(work, srcDir);
  stops.push(worker.stop);
  const env = `FANOUT_ENDPOINT=${worker.endpoint}`;
  // The CLI as users run it: the executable (its launcher keeps NODE_EXTRA_CA_CERTS from Node's
  // start for the short commands, bin/fanout.js), with this Node first on PATH.
  const fanoutCmd = (rest) => `${env} PATH=${dirname(process.execPath)}:"$PATH" ${bin} ${rest}`;
  const scenarios = [
    { name: 'nginx (sendfile) → curl', key: 'nginx', command: `curl -sf -o /dev/null ${nginx.url}/model.bin`, server: nginx.pid },
    { name: '`fanout cat`', key: 'fanoutCat', command: `${fanoutCmd('cat /data/model.bin')} > /dev/null`, server: worker.pid },
    { name: 'curl of `/v1/data`', key: 'data', command: `curl -sf -o /dev/null ${worker.endpoint}/v1/data/data/model.bin`, server: worker.pid },
  ];
  // Warm-up: the page cache for nginx, the page store (and its page cache) for the worker.
  process.stderr.write('warming up…\n');
  for (const s of scenarios) await runMeasured(s.command);
  await runMeasured(`${fanoutCmd('cat /data/one.bin')} > /dev/null`);
  const loadStart = await loadavg();
  const samples = Object.fromEntries(scenarios.map((s) => [s.key, []]));
  // Interleaved, so a burst of load from other work lands on every reader alike.
  for (let i = 0; i < runs; i++) {
    for (const s of scenarios) samples[s.key].push(await measure(s.command, s.server));
  }
  // The fixed cost's commands. Where the environment sets NODE_EXTRA_CA_CERTS (these machines
  // do), Node 20 parses its root certificates and that file at every start, before any module of
  // ours: `fanout cat` and `node -e 0` run again without it, and `node bin/fanout.js cat` (Node
  // given the variable: what the launcher avoids), to show what the variable costs.
  const extraCa = process.env.NODE_EXTRA_CA_CERTS ? 'env -u NODE_EXTRA_CA_CERTS ' : '';
  const fixedCommands = {
    catOneByte: { name: '`fanout cat` of a 1-byte file', command: `${fanoutCmd('cat /data/one.bin')} > /dev/null` },
    help: { name: '`fanout --help`', command: `${process.execPath} ${bin} --help > /dev/null` },
    node: { name: "`node -e 0` (Node's own start)", command: `${process.execPath} -e 0` },
    ...(extraCa && {
      catNoExtraCa: { name: '`fanout cat` of a 1-byte file, NODE_EXTRA_CA_CERTS unset', command: `${extraCa}${fanoutCmd('cat /data/one.bin')} > /dev/null` },
      nodeNoExtraCa: { name: '`node -e 0`, NODE_EXTRA_CA_CERTS unset', command: `${extraCa}${process.execPath} -e 0` },
      catByNode: { name: '`node bin/fanout.js cat` of a 1-byte file (Node parses NODE_EXTRA_CA_CERTS)', command: `${env} ${process.execPath} ${bin} cat /data/one.bin > /dev/null` },
    }),
  };
  const fixed = Object.fromEntries(Object.keys(fixedCommands).map((k) => [k, []]));
  for (let i = 0; i < fixedRuns; i++) {
    for (const [key, { command }] of Object.entries(fixedCommands)) fixed[key].push(await runMeasured(command));
  }
  const loadEnd = await loadavg();
  // Whether `fanout cat` ran from its one-file bundle (npm run build) or from the modules.
  const { freshBundle } = await import(join(root, 'dist/src/cli/bundle.cjs'));
  const bundled = freshBundle(root, 'quick') !== undefined;

  const result = {
    size,
    runs,
    pageSize: args['page-size'],
    loadavg: { start: loadStart, end: loadEnd },
    readers: Object.fromEntries(scenarios.map((s) => [s.key, { name: s.name, ...summarize(samples[s.key]) }])),
    fixedCost: {
      ...Object.fromEntries(
        Object.entries(fixed).map(([key, runs]) => [key, { seconds: median(runs.map((r) => r.seconds)), cpuSeconds: median(runs.map((r) => r.cpu)), samples: runs }]),
      ),
      nodeExtraCaCerts: process.env.NODE_EXTRA_CA_CERTS ?? null,
      bundled,
    },
  };
  const base = result.readers.nginx;
  const gib = size / GiB;
  console.log(`file ${gib.toFixed(2)} GiB, warm, to /dev/null, median of ${runs}; load average ${loadStart} → ${loadEnd}`);
  console.log('| reader | seconds | GB/s | CPU s/GiB (client + server) | time ÷ nginx | CPU ÷ nginx | machine busy CPU s/GiB | ÷ nginx |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const s of scenarios) {
    const r = result.readers[s.key];
    const cpu = `${(r.cpuSeconds / gib).toFixed(2)} (${(r.clientCpuSeconds / gib).toFixed(2)} + ${(r.serverCpuSeconds / gib).toFixed(2)})`;
    console.log(`| ${s.name} | ${r.seconds.toFixed(2)} | ${(size / r.seconds / 1e9).toFixed(2)} | ${cpu} | ${(r.seconds / base.seconds).toFixed(2)}× | ${(r.cpuSeconds / base.cpuSeconds).toFixed(2)}× | ${(r.machineCpuSeconds / gib).toFixed(2)} | ${(r.machineCpuSeconds / base.machineCpuSeconds).toFixed(2)}× |`);
  }
  const f = result.fixedCost;
  console.log(`\nCLI fixed cost, median of ${fixedRuns} (cat and stat ${bundled ? 'from the bundle' : 'from the modules: run npm run build for the bundle'}):`);
  console.log('| command | seconds | CPU seconds |');
  console.log('|---|---|---|');
  for (const [key, { name }] of Object.entries(fixedCommands)) console.log(`| ${name} | ${f[key].seconds.toFixed(3)} | ${f[key].cpuSeconds.toFixed(3)} |`);
  if (extraCa) console.log(`(this environment sets NODE_EXTRA_CA_CERTS=${process.env.NODE_EXTRA_CA_CERTS}: every Node process given it parses it at start; the executable keeps it from its short commands)`);
  await mkdir(join(root, 'bench/out'), { recursive: true });
  await writeFile(join(root, 'bench/out/single-client.json'), JSON.stringify(result, null, 2));
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => {});
  await rm(work, { recursive: true, force: true });
}
