#!/usr/bin/env node
// Release rollout: v1 (SIZE over FILES files) then v2 (PCT% of its pages changed) rolled out to
// N sync agents through a fanout cluster whose source reads are capped at RATE, compared in the
// same run with the naive way: every host copies the whole new version from the source, all
// hosts sharing the same RATE-capped source. Reports time from promote until every host has
// switched, and bytes read from the source, as ratios. Loopback only (one machine); every tree
// is hash-checked against the source.
//
//   node bench/release.mjs [--size 512MiB] [--files 64] [--hosts 4] [--workers 3] [--rate 350MB/s] [--pct 1]
//                          [--page-size 1MiB] [--store DIR (hosts' dirs, default /var/tmp)]
// Results: a table on stdout and bench/out/release.json.
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { startEtcd } from '../dist/test/harness/etcd.js';
import { startCluster } from '../dist/test/harness/workers.js';
import { TokenBucket } from '../dist/src/lib/ratelimit/index.js';
import { parseSize } from '../dist/src/core/pages.js';
import { benchArgs, bin, root, treeHash, writeChangedCopy } from './common.mjs';

const opt = benchArgs({ size: '512MiB', files: '64', hosts: '4', workers: '3', rate: '350MB/s', pct: '1', 'page-size': '1MiB', store: '/var/tmp' });
const SIZE = parseSize(opt.size);
const FILES = Number(opt.files);
const HOSTS = Number(opt.hosts);
const WORKERS = Number(opt.workers);
const RATE = parseSize(opt.rate);
const PCT = Number(opt.pct);
const PAGE = parseSize(opt['page-size']);

const work = await mkdtemp(join(opt.store, 'fanout-bench-release-'));
const source = join(work, 'source');
const log = (line) => process.stderr.write(`[bench] ${line}\n`);
const now = () => performance.now();

function run(args, { quiet = false } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`fanout ${args.join(' ')}: ${code}\n${out}${err}`))));
    if (quiet) p.stderr.resume();
  });
}

async function sourceBytes(workers) {
  let total = 0;
  for (const w of workers) total += (await w.metrics()).fanout_source_bytes_total ?? 0;
  return total;
}

/** v1: FILES files of random bytes summing to SIZE. */
async function makeV1() {
  const dir = join(source, 'app/v1');
  await mkdir(dir, { recursive: true });
  const per = Math.floor(SIZE / FILES);
  const buf = Buffer.allocUnsafe(8 << 20);
  for (let i = 0; i < FILES; i++) {
    const size = i === FILES - 1 ? SIZE - per * (FILES - 1) : per;
    const h = await open(join(dir, `shard-${String(i).padStart(4, '0')}.bin`), 'w');
    for (let off = 0; off < size; off += buf.length) {
      const n = Math.min(buf.length, size - off);
      randomFillSync(buf, 0, n);
      await h.write(buf, 0, n);
    }
    await h.close();
  }
}

/** v2: a copy of v1 with PCT% of its pages changed (64 bytes in each chosen page). */
function makeV2() {
  return writeChangedCopy(join(source, 'app/v1'), join(source, 'app/v2'), { fileBytes: Math.floor(SIZE / FILES), pageSize: PAGE, pct: PCT });
}

/** Every host copies the whole version from the source; all share the source's RATE. */
async function naiveCopy(version, label) {
  const bucket = new TokenBucket({ rate: RATE, burst: 1 << 20 });
  const from = join(source, 'app', version);
  const names = (await readdir(from)).sort();
  const started = now();
  await Promise.all(
    Array.from({ length: HOSTS }, async (_, h) => {
      const to = join(work, 'naive', `host${h}`, version);
      await mkdir(to, { recursive: true });
      for (const name of names) {
        const out = createWriteStream(join(to, name));
        for await (const chunk of createReadStream(join(from, name), { highWaterMark: 1 << 20 })) {
          await bucket.take(chunk.length);
          if (!out.write(chunk)) await new Promise((r) => out.once('drain', r));
        }
        await new Promise((r, j) => out.end((e) => (e ? j(e) : r())));
      }
    }),
  );
  const seconds = (now() - started) / 1000;
  const expected = await treeHash(from);
  for (let h = 0; h < HOSTS; h++) if ((await treeHash(join(work, 'naive', `host${h}`, version))) !== expected) throw new Error(`naive copy ${label} differs`);
  log(`naive ${label}: ${seconds.toFixed(2)} s`);
  return { seconds, sourceBytes: HOSTS * (SIZE) };
}

async function waitSwitched(dirs, version, started) {
  for (;;) {
    const current = await Promise.all(dirs.map((d) => readlink(join(d, 'current')).then(basename, () => null)));
    if (current.every((v) => v === version)) return (now() - started) / 1000;
    if (now() - started > 1800_000) throw new Error('hosts did not switch within 30 min');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const etcd = await startEtcd();
let workers = [];
const agents = [];
try {
  log(`generating v1: ${opt.size} in ${FILES} files`);
  await makeV1();
  const changedPages = await makeV2();
  log(`v2: ${changedPages} pages changed (${PCT}%)`);
  workers = await startCluster(WORKERS, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: PAGE, capacity: SIZE * 4, sourceRate: RATE, statTtl: '200ms' });
  const common = ['--etcd', etcd.endpoint, '--endpoint', workers.map((w) => w.url)[0]];

  let t = now();
  await run(['release', 'publish', 'app', '/data/app/v1/', '--version', 'v1', '--mount', `data=${source}`, ...common, '--json']);
  await run(['release', 'publish', 'app', '/data/app/v2/', '--version', 'v2', '--mount', `data=${source}`, ...common, '--json']);
  const publishSeconds = (now() - t) / 1000;
  log(`published v1 and v2 in ${publishSeconds.toFixed(2)} s (hashing ${((2 * SIZE) / 1e6 / publishSeconds).toFixed(0)} MB/s)`);

  const dirs = Array.from({ length: HOSTS }, (_, i) => join(work, 'hosts', `host${i}`));
  for (let i = 0; i < HOSTS; i++) {
    const p = spawn(process.execPath, [bin, 'sync', 'app', '--channel', 'prod', '--dir', dirs[i], '--interval', '50ms', '--host', `host${i}`, ...common], { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr.pipe(createWriteStream(join(work, `agent${i}.log`)));
    agents.push(p);
  }
  await new Promise((r) => setTimeout(r, 1500)); // agents up and polling

  // v1, cold cluster
  let before = await sourceBytes(workers);
  t = now();
  await run(['release', 'promote', 'app', 'v1', '--channel', 'prod', ...common]);
  const v1Seconds = await waitSwitched(dirs, 'v1', t);
  const v1Source = (await sourceBytes(workers)) - before;
  log(`fanout v1: ${v1Seconds.toFixed(2)} s, ${v1Source} source bytes`);

  // The same delivery from a warm cluster: HOSTS fresh hosts pull v1 at once (delivery floor on this machine).
  t = now();
  await Promise.all(Array.from({ length: HOSTS }, (_, i) => run(['sync', 'app', '--channel', 'prod', '--once', '--dir', join(work, 'warm', `host${i}`), '--host', `warm${i}`, ...common])));
  const warmSeconds = (now() - t) / 1000;
  log(`warm delivery of ${HOSTS} copies: ${warmSeconds.toFixed(2)} s`);

  // v2
  before = await sourceBytes(workers);
  t = now();
  await run(['release', 'promote', 'app', 'v2', '--channel', 'prod', '--expect', 'v1', ...common]);
  const v2Seconds = await waitSwitched(dirs, 'v2', t);
  const v2Source = (await sourceBytes(workers)) - before;
  log(`fanout v2: ${v2Seconds.toFixed(2)} s, ${v2Source} source bytes`);

  const v1Hash = await treeHash(join(source, 'app/v1'));
  const v2Hash = await treeHash(join(source, 'app/v2'));
  for (const d of dirs) if ((await treeHash(join(d, 'current'))) !== v2Hash) throw new Error(`${d} differs from v2`);
  for (let i = 0; i < HOSTS; i++) if ((await treeHash(join(work, 'warm', `host${i}`, 'current'))) !== v1Hash) throw new Error('warm copy differs');

  const naive1 = await naiveCopy('v1', 'v1');
  await rm(join(work, 'naive'), { recursive: true, force: true });
  const naive2 = await naiveCopy('v2', 'v2');

  const floor = Math.max(SIZE / RATE, warmSeconds);
  const result = {
    config: { size: SIZE, files: FILES, hosts: HOSTS, workers: WORKERS, rate: RATE, pageSize: PAGE, changedPct: PCT, changedPages },
    publishSeconds,
    v1: { fanoutSeconds: v1Seconds, sourceBytes: v1Source, sizeOverRate: SIZE / RATE, warmDeliverySeconds: warmSeconds, floor, ratioToFloor: v1Seconds / floor, naiveSeconds: naive1.seconds, naiveSourceBytes: naive1.sourceBytes },
    v2: { fanoutSeconds: v2Seconds, sourceBytes: v2Source, sourceVsV1: v2Source / v1Source, naiveSeconds: naive2.seconds, timeVsNaive: v2Seconds / naive2.seconds, naiveSourceBytes: naive2.sourceBytes },
  };
  await mkdir(join(root, 'bench/out'), { recursive: true });
  await writeFile(join(root, 'bench/out/release.json'), JSON.stringify(result, null, 2) + '\n');
  const mb = (b) => `${(b / 1e6).toFixed(1)} MB`;
  console.log(`release rollout: ${opt.size} in ${FILES} files, ${HOSTS} hosts, ${WORKERS} workers, source capped at ${opt.rate}, ${PCT}% of pages changed in v2 (${changedPages} pages)`);
  console.log(`                       fanout        naive copy    ratio`);
  console.log(`v1 time-to-switch      ${v1Seconds.toFixed(2).padStart(7)} s     ${naive1.seconds.toFixed(2).padStart(7)} s     ${(v1Seconds / naive1.seconds).toFixed(3)}`);
  console.log(`v1 source bytes        ${mb(v1Source).padStart(10)}   ${mb(naive1.sourceBytes).padStart(10)}   ${(v1Source / naive1.sourceBytes).toFixed(3)}`);
  console.log(`v2 time-to-switch      ${v2Seconds.toFixed(2).padStart(7)} s     ${naive2.seconds.toFixed(2).padStart(7)} s     ${(v2Seconds / naive2.seconds).toFixed(3)}`);
  console.log(`v2 source bytes        ${mb(v2Source).padStart(10)}   ${mb(naive2.sourceBytes).padStart(10)}   ${(v2Source / naive2.sourceBytes).toFixed(4)}`);
  console.log(`v1 vs floor: ${v1Seconds.toFixed(2)} s / max(size÷rate ${(SIZE / RATE).toFixed(2)} s, warm delivery ${warmSeconds.toFixed(2)} s) = ${(v1Seconds / floor).toFixed(2)}×`);
  console.log(`v2 source bytes ÷ v1 source bytes = ${((100 * v2Source) / v1Source).toFixed(2)}%`);
} finally {
  for (const a of agents) a.kill('SIGTERM');
  await Promise.all(agents.map((a) => (a.exitCode === null && a.signalCode === null ? new Promise((r) => a.once('exit', r)) : null)));
  await Promise.all(workers.map((w) => w.destroy()));
  await etcd.stop();
  await rm(work, { recursive: true, force: true });
}
