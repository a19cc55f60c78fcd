#!/usr/bin/env node
// Many hosts, one slow source: N client hosts pull the same file at once, through
//   1. nothing (direct from the origin),  2. nginx caching proxy with proxy_cache_lock (cold,
//   warm),  3. a fanout cluster of W worker hosts (cold, warm).
// Hosts are network namespaces (bench/lab/netlab.sh); the origin's egress is capped by tc.
// Every client writes its copy to its own directory and the sha256 is checked afterwards.
// Also prints ring balance and moved fraction. Root only. Results: table + bench/out/lab.json.
//
//   sudo node bench/lab.mjs [--size 2GiB] [--clients 8] [--workers 4] [--rate 350MB/s] [--runs 1]
//                           [--store DIR for the clients' copies (default /dev/shm)]
// Experiments (one thing at a time, to separate what a cold read costs): [--only fanout] skips
// the direct and nginx scenarios; [--hedge auto|off|MS] is the clients' hedge; [--scrub RATE|off]
// and [--fills-per-mount N] set the workers' scrub rate and limits.fillsPerMount, [--page-size SIZE]
// the cluster's page size (defaults: the product's); [--cpu-prof DIR] writes each worker's CPU profile there (node --cpu-prof);
// [--worker-logs DIR] keeps each worker's log there (warnings: owners taken for down, failed reads);
// [--perf DIR] records a system-wide perf profile of each phase there; [--pretouch off] skips
// touching the phase's memory before each phase (see pretouchMemory); [--worker-node-flags "FLAGS"]
// runs the workers under those Node/V8 flags (e.g. a young generation's size).
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { benchArgs, bin, median, parseSize, pretouchMemory, root, startPerf, writeRandomFile } from './common.mjs';
import { machineCpu } from './cpu.mjs';
import { HashRing } from '../dist/src/lib/hashring/index.js';

const labDir = join(root, 'bench/lab');
const netlab = join(labDir, 'netlab.sh');
const opt = benchArgs({ size: '2GiB', clients: '8', workers: '4', rate: '350MB/s', runs: '1', store: '/dev/shm', only: '', hedge: '', scrub: '', 'fills-per-mount': '', 'page-size': '', 'cpu-prof': '', 'worker-logs': '', perf: '', pretouch: 'on', 'worker-node-flags': '' });
const SIZE = parseSize(opt.size);
const N = Number(opt.clients);
const W = Number(opt.workers);
const RUNS = Number(opt.runs);
const RATE = opt.rate;
const PORT = 8080;
// Client copies go to --store (tmpfs by default, as a serving host's local disk would be fast);
// the origin file, worker page stores and nginx's cache live on disk so memory holds the copies.
const work = join('/var/tmp', `fanout-lab-${process.pid}`);
const clientsDir = join(opt.store, `fanout-lab-clients-${process.pid}`);

const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: 'utf8', ...opts });
const addr = (host) => sh(netlab, ['addr', host]).trim();
const workerHost = (i) => `h${i + 1}`;
const clientHost = (i) => `h${W + i + 1}`;
const proxyHost = `h${W + N + 1}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function inHost(host, cmd, args, opts = {}) {
  return spawn(netlab, ['exec', host, cmd, ...args], { stdio: ['ignore', 'ignore', 'inherit'], ...opts });
}
function exited(proc) {
  return new Promise((resolve, reject) => {
    proc.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${proc.spawnargs.slice(2).join(' ')} exited ${code}`))));
  });
}
async function waitHttp(host, url) {
  for (let i = 0; i < 200; i++) {
    try {
      sh(netlab, ['exec', host, 'curl', '-sf', '-o', '/dev/null', url]);
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`${url} not reachable from ${host}`);
}
async function originBytes() {
  return JSON.parse(sh(netlab, ['exec', 'h1', 'curl', '-s', `http://${addr('origin')}:${PORT}/__stats`])).bytes;
}
function sha256File(file) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(file, { highWaterMark: 4 << 20 }).on('data', (d) => hash.update(d)).on('end', () => resolve(hash.digest('hex'))).on('error', reject);
  });
}

/** Starts all N clients at once; each runs `command(i, dest)`; returns completion times. */
async function pullAll(name, command) {
  const dests = Array.from({ length: N }, (_, i) => join(clientsDir, `c${i}`, 'f.bin'));
  for (const d of dests) await rm(d, { force: true });
  if (opt.pretouch !== 'off') await pretouchMemory((N + 1) * SIZE); // the copies, and the store or cache
  const before = await originBytes();
  const cpuBefore = machineCpu();
  const perf = startPerf(opt.perf, name);
  const started = performance.now();
  const times = await Promise.all(
    dests.map(async (dest, i) => {
      const [cmd, ...args] = command(i, dest);
      // A client's output (fanout cp --json says why it failed) is shown only if it fails.
      const proc = inHost(clientHost(i), cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      proc.stdout.on('data', (d) => (out = (out + d).slice(-4000)));
      await exited(proc).catch((err) => {
        throw new Error(`${err.message}: ${out}`);
      });
      return (performance.now() - started) / 1000;
    }),
  );
  const originSent = (await originBytes()) - before;
  const cpu = machineCpu().since(cpuBefore);
  await perf?.stop();
  const hashes = await Promise.all(dests.map(sha256File));
  const ok = hashes.every((h) => h === fileHash);
  for (const d of dests) await rm(d, { force: true });
  times.sort((a, b) => a - b);
  const row = { name, all: times.at(-1), p50: times[Math.floor(N / 2)], first: times[0], originRatio: originSent / SIZE, sha256ok: ok, busyCpuS: cpu.busy, idleCpuS: cpu.idle };
  // Busy and idle CPU seconds of the whole machine over the phase: a phase that is slower than
  // another with the same busy seconds waited (latency), one with more busy seconds worked more.
  process.stderr.write(`  ${name}: all ${row.all.toFixed(1)} s, p50 ${row.p50.toFixed(1)} s, origin ${row.originRatio.toFixed(2)}×, sha ${ok ? 'ok' : 'MISMATCH'}, machine CPU busy ${cpu.busy.toFixed(1)} s idle ${cpu.idle.toFixed(1)} s\n`);
  return row;
}

function nginxConfig(dir) {
  return `worker_processes 2;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=fo:10m max_size=${Math.ceil((SIZE * 2) / 2 ** 20)}m inactive=1h use_temp_path=off;
  server {
    listen ${PORT};
    location / {
      proxy_pass http://${addr('origin')}:${PORT};
      proxy_cache fo;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 1h;
      proxy_cache_lock_age 1h;
      proxy_cache_valid 200 1h;
      proxy_max_temp_file_size 0;
      proxy_read_timeout 1h;
    }
  }
}
`;
}

function ringFigures() {
  const keys = Array.from({ length: 100_000 }, (_, i) => createHash('sha256').update(`page-${i}`).digest('hex').slice(0, 40));
  const member = (i) => ({ id: `w${i}`, url: `http://w${i}`, capacity: 100 * 2 ** 30 });
  const out = {};
  for (const n of [4, 16, 100]) {
    const members = Array.from({ length: n }, (_, i) => member(i));
    const ring = new HashRing(members);
    const counts = new Map();
    const owner = keys.map((k) => ring.owners(k, 1)[0].id);
    for (const o of owner) counts.set(o, (counts.get(o) ?? 0) + 1);
    const maxOverMean = Math.max(...counts.values()) / (keys.length / n);
    const joined = new HashRing([...members, member(n)]);
    const movedJoin = keys.filter((k, i) => joined.owners(k, 1)[0].id !== owner[i]).length / keys.length;
    const left = new HashRing(members.slice(1));
    const movedLeave = keys.filter((k, i) => left.owners(k, 1)[0].id !== owner[i]).length / keys.length;
    out[n] = { maxOverMean, movedOnJoin: movedJoin, idealJoin: 1 / (n + 1), movedOnLeave: movedLeave, idealLeave: 1 / n };
  }
  return out;
}

let fileHash = '';
async function main() {
  if (process.getuid() !== 0) throw new Error('run as root (network namespaces)');
  if (!existsSync('/usr/sbin/nginx')) {
    sh('bash', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null']);
  }
  sh(netlab, ['up', String(W + N + 1), '--origin-rate', RATE], { stdio: 'inherit' });
  const procs = [];
  try {
    await mkdir(join(work, 'origin'), { recursive: true });
    for (let i = 0; i < N; i++) await mkdir(join(clientsDir, `c${i}`), { recursive: true });
    process.stderr.write(`writing a ${SIZE}-byte random file…\n`);
    const file = join(work, 'origin', 'f.bin');
    await writeRandomFile(file, SIZE);
    fileHash = await sha256File(file);

    const origin = inHost('origin', 'node', [join(labDir, 'origin.mjs'), '--dir', join(work, 'origin'), '--host', '0.0.0.0', '--port', String(PORT), '--rate', '0', '--quiet']);
    procs.push(origin);
    const originUrl = `http://${addr('origin')}:${PORT}/f.bin`;
    await waitHttp('h1', originUrl.replace('f.bin', '__stats'));

    const results = [];
    for (let run = 0; run < RUNS; run++) {
      process.stderr.write(`run ${run + 1}/${RUNS}\n`);
      const rows = {};
      const baselines = opt.only !== 'fanout';
      if (baselines) rows.direct = await pullAll('direct', (i, dest) => ['curl', '-sf', '-o', dest, originUrl]);

      // nginx with proxy_cache_lock, on its own host.
      const nginxDir = join(work, 'nginx');
      await rm(nginxDir, { recursive: true, force: true });
      await mkdir(join(nginxDir, 'cache'), { recursive: true });
      await writeFile(join(nginxDir, 'nginx.conf'), nginxConfig(nginxDir));
      if (baselines) {
      const nginx = inHost(proxyHost, 'nginx', ['-c', join(nginxDir, 'nginx.conf'), '-g', 'daemon off;']);
      procs.push(nginx);
      const proxyUrl = `http://${addr(proxyHost)}:${PORT}/f.bin`;
      await waitHttp(proxyHost, `http://${addr(proxyHost)}:${PORT}/__stats`);
      rows.nginxCold = await pullAll('nginx lock, cold', (i, dest) => ['curl', '-sf', '-o', dest, proxyUrl]);
      rows.nginxWarm = await pullAll('nginx, warm', (i, dest) => ['curl', '-sf', '-o', dest, proxyUrl]);
      nginx.kill('SIGQUIT');
      await new Promise((r) => nginx.once('exit', r));
      }

      // fanout: W workers with a static member list, the origin mounted over HTTP.
      const members = Array.from({ length: W }, (_, i) => ({ id: `w${i + 1}`, url: `http://${addr(workerHost(i))}:7450` }));
      const workers = [];
      for (let i = 0; i < W; i++) {
        const dir = join(work, `worker${i}`);
        await rm(dir, { recursive: true, force: true });
        await mkdir(dir, { recursive: true });
        const config = {
          id: members[i].id,
          listen: `${addr(workerHost(i))}:7450`,
          dataDir: join(dir, 'data'),
          capacity: `${Math.ceil((SIZE * 2) / 2 ** 20)}MiB`,
          mounts: { data: `http://${addr('origin')}:${PORT}/` },
          sourceRate: RATE,
          membership: { static: members },
          logLevel: 'warn',
          ...(opt.scrub ? { scrub: { rate: opt.scrub } } : {}),
          ...(opt['fills-per-mount'] ? { limits: { fillsPerMount: Number(opt['fills-per-mount']) } } : {}),
          ...(opt['page-size'] ? { pageSize: opt['page-size'] } : {}),
        };
        await writeFile(join(dir, 'worker.yaml'), JSON.stringify(config));
        const prof = opt['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', opt['cpu-prof'], '--cpu-prof-name', `worker${i + 1}.cpuprofile`] : opt.perf ? ['--perf-basic-prof'] : [];
        const log = opt['worker-logs'] ? openSync(join(opt['worker-logs'], `worker${i + 1}.log`), 'w') : 'ignore';
        const nodeFlags = opt['worker-node-flags'] ? opt['worker-node-flags'].split(' ') : [];
        const proc = inHost(workerHost(i), 'node', [...nodeFlags, ...prof, bin, 'worker', '--config', join(dir, 'worker.yaml')], { stdio: ['ignore', log, log] });
        workers.push(proc);
        procs.push(proc);
      }
      for (let i = 0; i < W; i++) await waitHttp(workerHost(i), `${members[i].url}/healthz`);
      const cp = (i, dest) => ['node', ...(opt.perf ? ['--perf-basic-prof'] : []), bin, 'cp', '/data/f.bin', dest, '--json', '--endpoint', members[i % W].url, ...(opt.hedge ? ['--hedge', opt.hedge] : [])];
      const workersCpu = () => workers.reduce((sum, w) => sum + processCpuSeconds(w.pid), 0);
      const beforeCold = workersCpu();
      rows.fanoutCold = await pullAll('fanout, cold', cp);
      rows.fanoutCold.workersCpuS = workersCpu() - beforeCold;
      rows.coldMetrics = phaseMetrics(members, 'cold phase');
      const beforeWarm = workersCpu();
      rows.fanoutWarm = await pullAll('fanout, warm', cp);
      rows.fanoutWarm.workersCpuS = workersCpu() - beforeWarm;
      console.log(`  workers' CPU s (user+sys, all threads): cold ${rows.fanoutCold.workersCpuS.toFixed(1)}, warm ${rows.fanoutWarm.workersCpuS.toFixed(1)}`);
      // Counters are cumulative: peer bytes beyond the cold phase's are warm relays (hedges, demoted owners).
      rows.warmMetrics = phaseMetrics(members, 'after the warm phase (cumulative)');
      rows.workerPeakRssMiB = Math.max(
        ...workers.map((w) => {
          // netlab exec replaces itself with the command, so the child's pid is the worker's.
          return Number(/VmHWM:\s+(\d+)/.exec(sh('cat', [`/proc/${w.pid}/status`]))[1]) / 1024;
        }),
      );
      for (const w of workers) w.kill('SIGTERM');
      await Promise.all(workers.map((w) => new Promise((r) => w.once('exit', r))));
      results.push(rows);
    }
    report(results);
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    sh(netlab, ['down']);
    await rm(work, { recursive: true, force: true });
    await rm(clientsDir, { recursive: true, force: true });
  }
}

/** A process's user+system CPU seconds so far, all its threads (fields 14 and 15 of /proc/PID/stat). */
function processCpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * Where a phase's source reads came from, per worker: page source reads, relays that read the
 * source because they took the owner for down (each a second read of its page), peer bytes.
 */
function phaseMetrics(members, label) {
  const want = ['fanout_source_reads_total', 'fanout_relay_source_reads_total', 'fanout_peer_bytes_total', 'fanout_page_misses_total'];
  const rows = members.map((m, i) => {
    let text = '';
    try {
      text = sh(netlab, ['exec', workerHost(i), 'curl', '-s', '--max-time', '10', `${m.url}/metrics`]);
    } catch {
      return { id: m.id };
    }
    const row = { id: m.id };
    for (const name of want) {
      row[name.replace(/^fanout_|_total$/g, '')] = text
        .split('\n')
        .filter((l) => l.startsWith(name))
        .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    }
    // How the cold phase's waiters were sent their fill: by the kernel from the fill's file, or by JS.
    row.fillSends = text
      .split('\n')
      .filter((l) => l.startsWith('fanout_fill_sends_total{'))
      .map((l) => `${/path="([^"]+)"/.exec(l)?.[1]}=${l.split(' ').pop()}`)
      .join(',');
    row.relayReasons = text
      .split('\n')
      .filter((l) => l.startsWith('fanout_relay_source_reads_total{'))
      .map((l) => `${/reason="([^"]+)"/.exec(l)?.[1]}=${l.split(' ').pop()}`)
      .join(',');
    return row;
  });
  console.log(`  ${label}, per worker: ${rows.map((r) => `${r.id} source reads ${r.source_reads}, relay source reads ${r.relay_source_reads}${r.relayReasons ? ` (${r.relayReasons})` : ''}, peer MiB ${((r.peer_bytes ?? 0) / 2 ** 20).toFixed(0)}${r.fillSends ? `, fill sends ${r.fillSends}` : ''}`).join('; ')}`);
  return rows;
}

function report(results) {
  const floorS = SIZE / Number(/^([\d.]+)/.exec(RATE)[1]) / (/GB/i.test(RATE) ? 1e9 : 1e6);
  const names = ['direct', 'nginxCold', 'nginxWarm', 'fanoutCold', 'fanoutWarm'].filter((n) => results[0][n]);
  if (!results[0].direct) {
    // Fanout only (an experiment): cold against warm, and the RSS.
    const cold = median(results.map((r) => r.fanoutCold.all));
    const warm = median(results.map((r) => r.fanoutWarm.all));
    console.log(`fanout cold ${cold.toFixed(1)} s, warm ${warm.toFixed(1)} s, cold ÷ warm ${(cold / warm).toFixed(2)}, origin ${median(results.map((r) => r.fanoutCold.originRatio)).toFixed(2)}×, worker RSS ${Math.max(...results.map((r) => r.workerPeakRssMiB)).toFixed(0)} MiB`);
    return;
  }
  const med = Object.fromEntries(
    names.map((n) => [n, { all: median(results.map((r) => r[n].all)), p50: median(results.map((r) => r[n].p50)), originRatio: median(results.map((r) => r[n].originRatio)), sha256ok: results.every((r) => r[n].sha256ok) }]),
  );
  console.log(`\n${(SIZE / 2 ** 30).toFixed(2)} GiB file, ${N} clients, ${W} fanout workers, origin capped at ${RATE}, median of ${RUNS} run(s)`);
  console.log('| scenario | all done (s) | p50 (s) | origin bytes ÷ size | sha256 |');
  console.log('|---|---|---|---|---|');
  for (const n of names) console.log(`| ${results[0][n].name} | ${med[n].all.toFixed(1)} | ${med[n].p50.toFixed(1)} | ${med[n].originRatio.toFixed(2)} | ${med[n].sha256ok ? 'ok' : 'MISMATCH'} |`);
  const floor = Math.max(floorS, med.nginxWarm.all);
  console.log(`\nfloor = max(size ÷ rate = ${floorS.toFixed(1)} s, nginx warm = ${med.nginxWarm.all.toFixed(1)} s) = ${floor.toFixed(1)} s`);
  console.log(`fanout cold ÷ floor = ${(med.fanoutCold.all / floor).toFixed(2)} (target ≤ 1.15); ÷ nginx-lock cold = ${(med.fanoutCold.all / med.nginxCold.all).toFixed(2)} (target ≤ 0.7)`);
  console.log(`fanout warm ÷ nginx warm = ${(med.fanoutWarm.all / med.nginxWarm.all).toFixed(2)} (target ≤ 1.1)`);
  console.log(`fanout cold ÷ fanout warm = ${(med.fanoutCold.all / med.fanoutWarm.all).toFixed(2)} (target ≤ 1.1)`);
  console.log(`origin bytes ÷ file size, fanout cold = ${med.fanoutCold.originRatio.toFixed(2)} (target ≤ 1.05)`);
  const rss = Math.max(...results.map((r) => r.workerPeakRssMiB));
  console.log(`worker peak RSS: ${rss.toFixed(0)} MiB (target ≤ 300)`);
  const ring = ringFigures();
  console.log('\n| workers | max/mean page share | moved on join (ideal 1/(N+1)) | moved on leave (ideal 1/N) |');
  console.log('|---|---|---|---|');
  for (const [n, r] of Object.entries(ring)) {
    console.log(`| ${n} | ${r.maxOverMean.toFixed(3)} | ${r.movedOnJoin.toFixed(4)} (${r.idealJoin.toFixed(4)}) | ${r.movedOnLeave.toFixed(4)} (${r.idealLeave.toFixed(4)}) |`);
  }
  return mkdir(join(root, 'bench/out'), { recursive: true }).then(() =>
    writeFile(join(root, 'bench/out/lab.json'), JSON.stringify({ size: SIZE, clients: N, workers: W, rate: RATE, runs: results, median: med, ring, workerPeakRssMiB: rss }, null, 2)),
  );
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
