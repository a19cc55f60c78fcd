#!/usr/bin/env node
// Release rollout in the network-namespace lab (bench/lab/netlab.sh): v1 (SIZE over FILES
// files) then v2 (PCT% of its pages changed) rolled out to N agent hosts (`fanout sync`, each in
// its own namespace with its own --dir) through W worker hosts whose mount has the cluster-wide
// source budget RATE; compared in the same run with the naive way: the origin host serves the
// version with throttled-origin.mjs (tc caps its egress at RATE) and every agent host copies
// the whole version with curl. Reports time from promote until every host has switched (or has
// the copy), source bytes (workers' fanout_source_bytes_total; origin's /__stats), the warm
// delivery floor, and hash-checks every tree. etcd listens on the lab bridge (`netlab.sh addr root`).
// Root only. Results: a table on stdout and bench/out/release-lab.json.
//
//   sudo node bench/release-lab.mjs [--size 2GiB] [--files 100] [--hosts 8] [--workers 4] [--rate 350MB/s]
//                                   [--pct 1] [--page-size 1MiB] [--parallel 4 (naive curls per host)]
//                                   [--store DIR (agents' and naive copies, default /var/tmp)]
//                                   [--etcd-port 23790]
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { benchArgs, bin, parseSize, root, treeHash, waitFor, writeChangedCopy, writeRandomFile } from './common.mjs';

const labDir = join(root, 'bench/lab');
const netlab = join(labDir, 'netlab.sh');
const opt = benchArgs({ size: '2GiB', files: '100', hosts: '8', workers: '4', rate: '350MB/s', pct: '1', 'page-size': '1MiB', parallel: '4', store: '/var/tmp', 'etcd-port': '23790' });
const SIZE = parseSize(opt.size);
const FILES = Number(opt.files);
const N = Number(opt.hosts);
const W = Number(opt.workers);
const RATE = opt.rate;
const RATE_BPS = Number(/^([\d.]+)/.exec(RATE)[1]) * (/GB/i.test(RATE) ? 1e9 : 1e6);
const PCT = Number(opt.pct);
const PAGE = parseSize(opt['page-size']);
const PAR = Number(opt.parallel);
const PORT = 8080;
const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: 'utf8', ...opts });
const BRIDGE = sh(netlab, ['addr', 'root']).trim();
const ETCD = `http://${BRIDGE}:${opt['etcd-port']}`;
// Source, etcd and worker page stores under /var/tmp; agents' dirs and naive copies under --store.
const work = join('/var/tmp', `fanout-release-lab-${process.pid}`);
const store = join(opt.store, `fanout-release-lab-hosts-${process.pid}`);
const source = join(work, 'source');

const addrs = {};
const addr = (host) => (addrs[host] ??= sh(netlab, ['addr', host]).trim());
const workerHost = (i) => `h${i + 1}`;
const agentHost = (i) => `h${W + i + 1}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const log = (line) => process.stderr.write(`[release-lab] ${line}\n`);

function inHost(host, cmd, args, opts = {}) {
  return spawn(netlab, ['exec', host, cmd, ...args], { stdio: ['ignore', 'ignore', 'inherit'], ...opts });
}
function exited(proc) {
  return new Promise((resolve, reject) => {
    if (proc.exitCode !== null) return proc.exitCode === 0 ? resolve() : reject(new Error(`${proc.spawnargs.slice(2).join(' ')} exited ${proc.exitCode}`));
    proc.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${proc.spawnargs.slice(2).join(' ')} exited ${code}`))));
  });
}
/** Runs the fanout CLI in the root namespace (it reaches the bridge and every host). */
function fanout(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`fanout ${args.join(' ')}: ${code}\n${out}`))));
  });
}

async function metrics(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
  }
  return out;
}
async function sourceBytes(members) {
  let total = 0;
  for (const m of members) total += (await metrics(m.url)).fanout_source_bytes_total ?? 0;
  return total;
}
async function originBytes() {
  return (await (await fetch(`http://${addr('origin')}:${PORT}/__stats`)).json()).bytes;
}

/** v1: FILES files of random bytes summing to SIZE. */
async function makeV1() {
  const dir = join(source, 'app/v1');
  await mkdir(dir, { recursive: true });
  const per = Math.floor(SIZE / FILES);
  for (let i = 0; i < FILES; i++) await writeRandomFile(join(dir, `shard-${String(i).padStart(4, '0')}.bin`), i === FILES - 1 ? SIZE - per * (FILES - 1) : per);
}

/** v2: a copy of v1 with PCT% of its pages changed (64 bytes in each chosen page). */
function makeV2() {
  return writeChangedCopy(join(source, 'app/v1'), join(source, 'app/v2'), { fileBytes: Math.floor(SIZE / FILES), pageSize: PAGE, pct: PCT });
}

async function waitSwitched(dirs, version, started) {
  for (;;) {
    const current = await Promise.all(dirs.map((d) => readlink(join(d, 'current')).then(basename, () => null)));
    if (current.every((v) => v === version)) return (now() - started) / 1000;
    if (now() - started > 1800_000) throw new Error(`hosts did not switch to ${version} within 30 min: ${current.join(',')}`);
    await sleep(10);
  }
}

/** Every agent host copies the whole version from the origin with curl (PAR files at a time). */
async function naiveCopy(version) {
  const names = (await readdir(join(source, 'app', version))).sort();
  const base = `http://${addr('origin')}:${PORT}/${version}`;
  const dests = Array.from({ length: N }, (_, i) => join(store, 'naive', `host${i}`, version));
  for (const d of dests) await mkdir(d, { recursive: true });
  const before = await originBytes();
  const started = now();
  const times = await Promise.all(
    dests.map(async (dest, i) => {
      const script = `printf '%s\\n' ${names.join(' ')} | xargs -P ${PAR} -I{} curl -sf -o ${dest}/{} ${base}/{}`;
      await exited(inHost(agentHost(i), 'bash', ['-c', script]));
      return (now() - started) / 1000;
    }),
  );
  const seconds = Math.max(...times);
  const bytes = (await originBytes()) - before;
  const expected = await treeHash(join(source, 'app', version));
  let ok = true;
  for (const d of dests) if ((await treeHash(d)) !== expected) ok = false;
  await rm(join(store, 'naive'), { recursive: true, force: true });
  log(`naive ${version}: ${seconds.toFixed(2)} s, origin sent ${(bytes / 1e6).toFixed(1)} MB, sha ${ok ? 'ok' : 'MISMATCH'}`);
  return { seconds, sourceBytes: bytes, sha256ok: ok };
}

async function main() {
  if (process.getuid() !== 0) throw new Error('run as root (network namespaces)');
  sh(netlab, ['up', String(W + N), '--origin-rate', RATE], { stdio: ['ignore', 'ignore', 'inherit'] });
  const procs = [];
  const agents = [];
  try {
    await mkdir(work, { recursive: true });
    await mkdir(store, { recursive: true });

    // etcd on the bridge address, as test/harness/etcd.ts starts it.
    const etcdData = join(work, 'etcd');
    const peer = `http://${BRIDGE}:${Number(opt['etcd-port']) + 10}`;
    const etcd = spawn(process.env.ETCD_BINARY ?? '/usr/bin/etcd', [
      '--name', 'lab', '--data-dir', etcdData,
      '--listen-client-urls', ETCD, '--advertise-client-urls', ETCD,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `lab=${peer}`,
      '--heartbeat-interval', '10', '--election-timeout', '100', '--logger', 'zap', '--log-level', 'error',
    ], { stdio: ['ignore', 'ignore', 'inherit'] });
    procs.push(etcd);
    await waitFor('etcd', async () => (await (await fetch(`${ETCD}/health`)).json()).health === 'true');

    log(`generating v1: ${opt.size} in ${FILES} files`);
    await makeV1();
    const changedPages = await makeV2();
    log(`v2: ${changedPages} pages of ${opt['page-size']} changed (${PCT}%)`);

    // The origin host serves source/app (v1/, v2/) for the naive copies; tc caps it at RATE.
    const origin = inHost('origin', 'node', [join(labDir, 'origin.mjs'), '--dir', join(source, 'app'), '--host', '0.0.0.0', '--port', String(PORT), '--rate', '0', '--quiet']);
    procs.push(origin);
    await waitFor('origin', async () => (await fetch(`http://${addr('origin')}:${PORT}/__stats`)).ok);

    // W workers in their namespaces, static member list, the source directory mounted with the
    // cluster-wide source budget RATE.
    const members = Array.from({ length: W }, (_, i) => ({ id: `w${i + 1}`, url: `http://${addr(workerHost(i))}:7450` }));
    for (let i = 0; i < W; i++) {
      const dir = join(work, `worker${i}`);
      await mkdir(dir, { recursive: true });
      const config = {
        id: members[i].id,
        listen: `${addr(workerHost(i))}:7450`,
        dataDir: join(dir, 'data'),
        capacity: `${Math.ceil((SIZE * 3) / 2 ** 20)}MiB`,
        pageSize: PAGE,
        mounts: { data: { uri: source, sourceRate: RATE } },
        statTtl: '200ms',
        membership: { static: members },
        logLevel: 'warn',
      };
      await writeFile(join(dir, 'worker.yaml'), JSON.stringify(config));
      const proc = inHost(workerHost(i), 'node', [bin, 'worker', '--config', join(dir, 'worker.yaml')], { stdio: ['ignore', 'ignore', 'pipe'] });
      proc.stderr.pipe(createWriteStream(join(work, `worker${i}.log`)));
      procs.push(proc);
    }
    for (const m of members) await waitFor(`${m.id} /healthz`, async () => (await fetch(`${m.url}/healthz`)).ok);
    const endpoint = (i) => members[i % W].url;

    let t = now();
    for (const v of ['v1', 'v2']) await fanout(['release', 'publish', 'app', `/data/app/${v}/`, '--version', v, '--mount', `data=${source}`, '--etcd', ETCD, '--endpoint', endpoint(0), '--json']);
    const publishSeconds = (now() - t) / 1000;
    log(`published v1 and v2 in ${publishSeconds.toFixed(2)} s`);

    // One sync agent per agent host, each with its own --dir.
    const dirs = Array.from({ length: N }, (_, i) => join(store, 'agents', `host${i}`));
    for (let i = 0; i < N; i++) {
      await mkdir(dirs[i], { recursive: true });
      const p = inHost(agentHost(i), 'node', [bin, 'sync', 'app', '--channel', 'prod', '--dir', dirs[i], '--interval', '50ms', '--host', agentHost(i), '--etcd', ETCD, '--endpoint', endpoint(i)], { stdio: ['ignore', 'ignore', 'pipe'] });
      p.stderr.pipe(createWriteStream(join(work, `agent${i}.log`)));
      agents.push(p);
      procs.push(p);
    }
    await sleep(2000); // agents up and watching

    // v1 on a cold cluster.
    let before = await sourceBytes(members);
    t = now();
    await fanout(['release', 'promote', 'app', 'v1', '--channel', 'prod', '--etcd', ETCD, '--endpoint', endpoint(0)]);
    const v1Seconds = await waitSwitched(dirs, 'v1', t);
    const v1Source = (await sourceBytes(members)) - before;
    log(`fanout v1: ${v1Seconds.toFixed(2)} s, ${(v1Source / 1e6).toFixed(1)} MB from the source`);

    // The warm cluster delivering N copies of v1 to fresh dirs on the same hosts (the delivery floor).
    const warmDirs = Array.from({ length: N }, (_, i) => join(store, 'warm', `host${i}`));
    t = now();
    await Promise.all(warmDirs.map((d, i) => exited(inHost(agentHost(i), 'node', [bin, 'sync', 'app', '--channel', 'prod', '--once', '--dir', d, '--host', `warm${i}`, '--etcd', ETCD, '--endpoint', endpoint(i)], { stdio: ['ignore', 'ignore', 'ignore'] }))));
    const warmSeconds = (now() - t) / 1000;
    const v1Hash = await treeHash(join(source, 'app/v1'));
    let warmOk = true;
    for (const d of warmDirs) if ((await treeHash(join(d, 'current'))) !== v1Hash) warmOk = false;
    await rm(join(store, 'warm'), { recursive: true, force: true });
    log(`warm delivery of ${N} copies: ${warmSeconds.toFixed(2)} s, sha ${warmOk ? 'ok' : 'MISMATCH'}`);

    // v2: 1% of pages changed.
    before = await sourceBytes(members);
    t = now();
    await fanout(['release', 'promote', 'app', 'v2', '--channel', 'prod', '--expect', 'v1', '--etcd', ETCD, '--endpoint', endpoint(0)]);
    const v2Seconds = await waitSwitched(dirs, 'v2', t);
    const v2Source = (await sourceBytes(members)) - before;
    log(`fanout v2: ${v2Seconds.toFixed(2)} s, ${(v2Source / 1e6).toFixed(2)} MB from the source`);

    // Every agent's current tree (v2) and its kept v1 against the source.
    const v2Hash = await treeHash(join(source, 'app/v2'));
    let agentsOk = true;
    for (const d of dirs) {
      if ((await treeHash(join(d, 'current'))) !== v2Hash) agentsOk = false;
      if ((await treeHash(join(d, 'versions/v1'))) !== v1Hash) agentsOk = false;
    }
    log(`agents' trees: ${agentsOk ? 'ok' : 'MISMATCH'}`);
    for (const a of agents) a.kill('SIGTERM');
    await Promise.all(agents.map((a) => (a.exitCode === null && a.signalCode === null ? new Promise((r) => a.once('exit', r)) : null)));
    await rm(join(store, 'agents'), { recursive: true, force: true });

    const naive1 = await naiveCopy('v1');
    const naive2 = await naiveCopy('v2');

    const floor = Math.max(SIZE / RATE_BPS, warmSeconds);
    const result = {
      config: { size: SIZE, files: FILES, hosts: N, workers: W, rate: RATE, pageSize: PAGE, changedPct: PCT, changedPages, naiveParallel: PAR, store: opt.store },
      publishSeconds,
      v1: { fanoutSeconds: v1Seconds, sourceBytes: v1Source, sizeOverRate: SIZE / RATE_BPS, warmDeliverySeconds: warmSeconds, floor, ratioToFloor: v1Seconds / floor, naiveSeconds: naive1.seconds, naiveSourceBytes: naive1.sourceBytes },
      v2: { fanoutSeconds: v2Seconds, sourceBytes: v2Source, sourceVsV1: v2Source / v1Source, naiveSeconds: naive2.seconds, timeVsNaive: v2Seconds / naive2.seconds, naiveSourceBytes: naive2.sourceBytes },
      sha256ok: { agents: agentsOk, warm: warmOk, naiveV1: naive1.sha256ok, naiveV2: naive2.sha256ok },
    };
    await mkdir(join(root, 'bench/out'), { recursive: true });
    await writeFile(join(root, 'bench/out/release-lab.json'), JSON.stringify(result, null, 2) + '\n');
    const mb = (b) => `${(b / 1e6).toFixed(1)} MB`;
    console.log(`\nrelease rollout in the lab: ${opt.size} in ${FILES} files, ${N} agent hosts, ${W} worker hosts, source ${RATE} (fanout: mount sourceRate; naive: tc on the origin), v2 = ${PCT}% of ${opt['page-size']} pages changed (${changedPages})`);
    console.log('| | fanout | naive copy (curl) | fanout ÷ naive |');
    console.log('|---|---|---|---|');
    console.log(`| v1 time-to-switch | ${v1Seconds.toFixed(2)} s | ${naive1.seconds.toFixed(2)} s | ${(v1Seconds / naive1.seconds).toFixed(3)} |`);
    console.log(`| v1 source bytes | ${mb(v1Source)} | ${mb(naive1.sourceBytes)} | ${(v1Source / naive1.sourceBytes).toFixed(3)} |`);
    console.log(`| v2 time-to-switch | ${v2Seconds.toFixed(2)} s | ${naive2.seconds.toFixed(2)} s | ${(v2Seconds / naive2.seconds).toFixed(3)} |`);
    console.log(`| v2 source bytes | ${mb(v2Source)} | ${mb(naive2.sourceBytes)} | ${(v2Source / naive2.sourceBytes).toFixed(4)} |`);
    console.log(`\nv1 vs floor: ${v1Seconds.toFixed(2)} s ÷ max(size÷rate ${(SIZE / RATE_BPS).toFixed(2)} s, warm delivery of ${N} copies ${warmSeconds.toFixed(2)} s) = ${(v1Seconds / floor).toFixed(2)}× (target ≤ 1.2×)`);
    console.log(`v2 source bytes ÷ v1 source bytes = ${((100 * v2Source) / v1Source).toFixed(2)}% (target ≤ 2%)`);
    console.log(`v2 time ÷ naive v2 time = ${((100 * v2Seconds) / naive2.seconds).toFixed(1)}% (target ≤ 10%)`);
    console.log(`publish (hash v1 + v2): ${publishSeconds.toFixed(2)} s; sha256: agents ${agentsOk ? 'ok' : 'MISMATCH'}, warm ${warmOk ? 'ok' : 'MISMATCH'}, naive v1 ${naive1.sha256ok ? 'ok' : 'MISMATCH'}, naive v2 ${naive2.sha256ok ? 'ok' : 'MISMATCH'}`);
    if (!(agentsOk && warmOk && naive1.sha256ok && naive2.sha256ok)) process.exitCode = 1;
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : null)));
    try {
      sh(netlab, ['down'], { stdio: ['ignore', 'ignore', 'inherit'] });
    } catch (err) {
      console.error(`netlab down: ${err.message}`);
    }
    await rm(work, { recursive: true, force: true });
    await rm(store, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
