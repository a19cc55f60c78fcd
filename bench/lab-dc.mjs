#!/usr/bin/env node
// Two datacenters joined by one capped line (bench/lab/netlab-dc.sh): DC-A holds the origin
// (bench/lab/origin.mjs serving a directory as S3 bucket "lab" and plain HTTP, egress capped by
// tc) and 2 fanout workers, DC-B 2 workers and 4 client hosts. One random file,
// every copy written to --store and sha256-checked. Scenarios, in one run:
//   a. DC-B's clients pull the file across the line from the origin (curl, all at once)
//   b. DC-B's cluster mounts the origin across the line (http://); clients `fanout cp` through it
//   c. DC-B's cluster over DC-A's cluster (fanout://a1,a2/data), cold in both; clients `fanout cp`
//   d. the file changed by --change % of its pages, published as release v2 in DC-A and synced by
//      DC-B's clients (`fanout sync --once`) after v1 (row d0, cold): only the delta crosses.
// Per scenario: all-done time, line bytes A→B ÷ size, origin bytes ÷ size, time ÷ (size ÷ line
// rate), the highest 1-second line rate (sampled every 100 ms), tbf drops. Root only; cleans up
// on exit and on Ctrl-C; re-runs rebuild the lab. Table on stdout, JSON in bench/out/lab-dc.json.
//
//   sudo node bench/lab-dc.mjs [--size 1GiB] [--line 100MB/s] [--budget RATE (fanout's line budget,
//        default = --line)] [--origin-rate 350MB/s] [--clients 4] [--change 10] [--page-size 4MiB]
//        [--store /dev/shm] [--only a,b,c,d]
import { execFileSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, link, mkdir, open, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { benchArgs, bin, parseSize, root, writeRandomFile } from './common.mjs';
import { Lab, LabCluster } from './lab/dc-hosts.mjs';
import { LabReleases } from './lab/dc-release.mjs';
import { LineMeter } from './lab/linemeter.mjs';
import { configSupport, parseRate } from './lab/dc-config.mjs';

const netlab = join(root, 'bench/lab/netlab-dc.sh');
const opt = benchArgs({ size: '1GiB', line: '100MB/s', 'origin-rate': '350MB/s', clients: '4', change: '10', 'page-size': '4MiB', store: '/dev/shm', only: 'a,b,c,d' });
const SIZE = parseSize(opt.size);
const PAGE = parseSize(opt['page-size']);
const BUDGET = opt.budget ?? opt.line;
// The rate the scenarios are held to: the line's tc cap, or fanout's budget when it is lower
// (`--line 1GB/s --budget 100MB/s` measures the budget alone, with the line never the limit).
const LINE_BPS = Math.min(parseRate(opt.line), parseRate(BUDGET));
const N = Number(opt.clients);
const ONLY = new Set(opt.only.split(','));
const work = join('/var/tmp', `fanout-labdc-${process.pid}`);
const store = join(opt.store, `fanout-labdc-${process.pid}`);
const originDir = join(work, 'origin');
const clients = Array.from({ length: N }, (_, i) => `c${i + 1}`);
const lab = new Lab(netlab);
const meter = { current: null };
const log = (line) => process.stderr.write(`[lab-dc] ${line}\n`);
const support = await configSupport();

function sha256File(file) {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(file, { highWaterMark: 4 << 20 }).on('data', (d) => hash.update(d)).on('end', () => resolve(hash.digest('hex'))).on('error', reject);
  });
}
const originBytes = async () => JSON.parse(await lab.get('ctl', `http://${lab.addr('origin')}:8080/__stats`)).bytes;
// The origin is an S3-style bucket "lab" over its directory (origin.mjs --bucket): listable, which
// releases need (workers find manifests under .fanout-releases/); curl reads the same objects.
const originS3 = () => ({ s3: { endpoint: `http://${lab.addr('origin')}:8080`, region: 'us-east-1', accessKeyId: 'lab', secretAccessKey: 'lab', forcePathStyle: true } });

/** The origin's files: f.bin, app/v1/f.bin (a link to it), app/v2/f.bin (--change % of its pages rewritten). */
async function makeFiles() {
  await mkdir(join(originDir, 'app/v1'), { recursive: true });
  await mkdir(join(originDir, 'app/v2'), { recursive: true });
  await writeRandomFile(join(originDir, 'f.bin'), SIZE);
  await link(join(originDir, 'f.bin'), join(originDir, 'app/v1/f.bin'));
  await copyFile(join(originDir, 'f.bin'), join(originDir, 'app/v2/f.bin'));
  const pages = Math.ceil(SIZE / PAGE);
  const order = Array.from({ length: pages }, (_, i) => i).sort(() => Math.random() - 0.5);
  const changed = order.slice(0, Math.max(1, Math.round((pages * Number(opt.change)) / 100))).sort((a, b) => a - b);
  const handle = await open(join(originDir, 'app/v2/f.bin'), 'r+');
  const block = Buffer.alloc(PAGE);
  let changedBytes = 0;
  for (const p of changed) {
    const length = Math.min(PAGE, SIZE - p * PAGE);
    randomFillSync(block, 0, length);
    await handle.write(block, 0, length, p * PAGE);
    changedBytes += length;
  }
  await handle.close();
  return { changedPages: changed.length, changedBytes };
}

/**
 * Runs one scenario: `body()` makes the copies and returns their paths; everything between the
 * two counter snapshots is the scenario's. `cluster`: DC-B's cluster, for its source bytes.
 */
async function scenario(key, name, body, { expect, cluster, idealBytes = SIZE } = {}) {
  log(`${key}: ${name}`);
  const bSource0 = cluster ? await cluster.metric('fanout_source_bytes_total') : 0;
  const origin0 = await originBytes();
  const before = await meter.current.snapshot();
  const paths = await body();
  const after = await meter.current.snapshot();
  const seconds = (after.t - before.t) / 1000;
  const origin = (await originBytes()) - origin0;
  const bSource = cluster ? (await cluster.metric('fanout_source_bytes_total')) - bSource0 : null;
  const hashes = await Promise.all(paths.map(sha256File));
  const peak = meter.current.peak(before, after);
  const row = {
    key, name, seconds, copies: paths.length, sha256ok: hashes.length > 0 && hashes.every((h) => h === expect),
    lineBytes: after.atob.payload - before.atob.payload, lineWireBytes: after.atob.wire - before.atob.wire, backBytes: after.btoa.payload - before.btoa.payload,
    drops: after.atob.drops - before.atob.drops, originBytes: origin, bSourceBytes: bSource,
    peakWire: peak.wire, peakPayload: peak.payload, samples: peak.samples, idealBytes,
  };
  Object.assign(row, {
    lineRatio: row.lineBytes / SIZE, wireRatio: row.lineWireBytes / SIZE, originRatio: origin / SIZE,
    timeRatio: seconds / (SIZE / LINE_BPS), idealTimeRatio: seconds / (idealBytes / LINE_BPS), peakRatio: peak.wire / LINE_BPS,
  });
  log(`  ${seconds.toFixed(1)} s, line ${row.lineRatio.toFixed(3)}× (wire ${row.wireRatio.toFixed(3)}×), origin ${row.originRatio.toFixed(3)}×, peak ${(peak.wire / 1e6).toFixed(1)} MB/s, drops ${row.drops}, sha ${row.sha256ok ? 'ok' : 'MISMATCH'}`);
  return row;
}

const copyPath = (key, i) => join(store, key, `c${i + 1}`, 'f.bin');
async function pullAll(key, command) {
  const dests = clients.map((_, i) => copyPath(key, i));
  for (const d of dests) await mkdir(join(d, '..'), { recursive: true });
  // Every client finishes (or fails) before the scenario ends: no traffic spills into the next one.
  const results = await Promise.allSettled(clients.map((host, i) => lab.run(host, ...command(i, dests[i]))));
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return dests;
}
const cpThrough = (cluster) => (i, dest) => ['node', [bin, 'cp', '/data/f.bin', dest, '--no-progress', '--endpoint', cluster.url(i)]];
const dropCopies = (key) => rm(join(store, key), { recursive: true, force: true });

/** Config of a DC-B worker whose mount `data` reads `uri` across the line. */
function bConfig(uri) {
  const line = support.lines ? { lines: { 'dc-a': { rate: BUDGET } }, mounts: { data: { uri, line: 'dc-a' } } } : { mounts: { data: { uri, sourceRate: BUDGET } } };
  return () => ({ ...line, ...originS3(), pageSize: PAGE, capacity: `${Math.ceil((3 * SIZE) / 2 ** 20)}MiB`, ...(support.datacenter ? { datacenter: 'dc-b' } : {}) });
}
const aConfig = () => ({ mounts: { data: { uri: 's3://lab', sourceRate: opt['origin-rate'] } }, ...originS3(), pageSize: PAGE, capacity: `${Math.ceil((3 * SIZE) / 2 ** 20)}MiB`, ...(support.datacenter ? { datacenter: 'dc-a' } : {}) });

async function main() {
  if (process.getuid() !== 0) throw new Error('run as root (network namespaces)');
  execFileSync(netlab, ['up', '--a-workers', '2', '--b-workers', '2', '--clients', String(N), '--origin-rate', opt['origin-rate'], '--line-rate', opt.line], { stdio: ['ignore', 'inherit', 'inherit'] });
  await mkdir(store, { recursive: true });
  log(`writing a ${SIZE}-byte random file and its v2 (${opt.change}% of ${PAGE}-byte pages changed)…`);
  const { changedPages, changedBytes } = await makeFiles();
  const fileHash = await sha256File(join(originDir, 'f.bin'));
  const v2Hash = await sha256File(join(originDir, 'app/v2/f.bin'));
  const origin = lab.start('origin', 'node', [join(root, 'bench/lab/origin.mjs'), '--dir', originDir, '--host', '0.0.0.0', '--port', '8080', '--bucket', 'lab', '--quiet'], join(work, 'origin.log'));
  await lab.waitHttp('ctl', `http://${lab.addr('origin')}:8080/__stats`, { proc: origin });
  meter.current = new LineMeter(netlab);
  await meter.current.start();
  log(`line budget: ${support.lines ? `lines: {dc-a: {rate: ${BUDGET}}} + mount line: dc-a` : `mount sourceRate: ${BUDGET} (this build has no "lines" config)`}`);

  const rows = [];
  const skipped = {};
  // A scenario that fails (a client timing out on an overloaded machine) is reported as failed;
  // the run goes on with the next one, so the others' figures are not lost.
  const attempt = async (key, fn) => {
    try {
      rows.push(await fn());
    } catch (err) {
      skipped[key] = `failed: ${err.message.split('\n').slice(0, 3).join(' | ')}`;
      log(`${key} ${skipped[key]}`);
    }
  };
  if (ONLY.has('a')) {
    const url = `http://${lab.addr('origin')}:8080/lab/f.bin`;
    await attempt('a', () => scenario('a', 'clients pull from the origin across the line (curl)', () => pullAll('a', (i, dest) => ['curl', ['-sf', '-o', dest, url]]), { expect: fileHash }));
    await dropCopies('a');
  }
  if (ONLY.has('b')) {
    const b = new LabCluster(lab, { name: 'B', hosts: ['b1', 'b2'], dir: join(work, 'b-direct'), bin, extra: bConfig('s3://lab') });
    await b.start();
    await attempt('b', () => scenario('b', "DC-B's cluster mounts the origin across the line", () => pullAll('b', cpThrough(b)), { expect: fileHash, cluster: b }));
    await dropCopies('b');
    await b.stop();
    await rm(b.dir, { recursive: true, force: true });
  }
  if (ONLY.has('c') || ONLY.has('d')) {
    const a = new LabCluster(lab, { name: 'A', hosts: ['a1', 'a2'], dir: join(work, 'a'), bin, extra: aConfig });
    await a.start();
    const remote = process.env.LABDC_TEST_REMOTE ?? `fanout://${['a1', 'a2'].map((h) => `${lab.addr(h)}:7450`).join(',')}/data`;
    const b = new LabCluster(lab, { name: 'B', hosts: ['b1', 'b2'], dir: join(work, 'b-remote'), bin, extra: bConfig(remote) });
    let bUp = true;
    try {
      await b.start();
    } catch (err) {
      bUp = false;
      skipped.c = skipped.d = `DC-B's workers did not start with the mount ${remote}: ${err.message.split('\n').slice(0, 4).join(' | ')}`;
      log(`c, d not run: ${skipped.c}`);
    }
    if (bUp && ONLY.has('c')) {
      await attempt('c', () => scenario('c', "DC-B's cluster over DC-A's cluster, cold in both", () => pullAll('c', cpThrough(b)), { expect: fileHash, cluster: b }));
      await dropCopies('c');
    }
    if (bUp && ONLY.has('d')) await releaseScenarios(a, b, { rows, skipped, fileHash, v2Hash, changedBytes, changedPages });
  }
  await report(rows, skipped, { changedPages, changedBytes });
}

/** d0: v1 synced by DC-B's clients (cold); d: v2 (--change %) promoted and synced: the delta. */
async function releaseScenarios(a, b, { rows, skipped, fileHash, v2Hash, changedBytes }) {
  const rel = new LabReleases(lab, { bin, work, originDir });
  await rel.startEtcd();
  const t = performance.now();
  await rel.publish('app', 'app/v1', 'v1', a.url(0));
  await rel.publish('app', 'app/v2', 'v2', a.url(0));
  log(`published v1 and v2 in ${((performance.now() - t) / 1000).toFixed(1)} s (the publisher reads the origin's directory, not its HTTP server)`);
  const dirOf = (i) => join(store, 'd', `c${i + 1}`);
  const sync = (version, expectPrevious) => async () => {
    await rel.promote('app', version, 'prod', expectPrevious);
    await rel.syncAll('app', 'prod', clients, dirOf, (i) => b.url(i));
    return clients.map((_, i) => join(dirOf(i), 'current', 'f.bin'));
  };
  try {
    rows.push(await scenario('d0', "release v1 synced by DC-B's clients (cold, content-hash pages)", sync('v1'), { expect: fileHash, cluster: b }));
    rows.push(await scenario('d', `release v2 (${opt.change}% of pages changed) synced after v1: the delta`, sync('v2', 'v1'), { expect: v2Hash, cluster: b, idealBytes: changedBytes }));
  } catch (err) {
    skipped.d = `release scenario failed: ${err.message.split('\n').slice(0, 6).join(' | ')}`;
    log(skipped.d);
  }
  await rm(join(store, 'd'), { recursive: true, force: true });
}

async function report(rows, skipped, { changedPages, changedBytes }) {
  const load = (await import('node:fs/promises')).readFile('/proc/loadavg', 'utf8');
  const mb = (x) => (x / 1e6).toFixed(1);
  console.log(`\n${(SIZE / 2 ** 30).toFixed(2)} GiB file, ${N} DC-B clients, 2+2 workers, origin egress ${opt['origin-rate']}, line ${opt.line} (tc, each way), fanout line budget ${BUDGET}; load average ${(await load).trim()}`);
  console.log(`| scenario | all done (s) | line A→B ÷ size (wire) | origin ÷ size | time ÷ (size ÷ ${(LINE_BPS / 1e6).toFixed(0)} MB/s) | peak 1-s line rate (÷ ${(LINE_BPS / 1e6).toFixed(0)} MB/s) | tbf drops | sha256 |`);
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.key}. ${r.name} | ${r.seconds.toFixed(1)} | ${r.lineRatio.toFixed(3)} (${r.wireRatio.toFixed(3)}) | ${r.originRatio.toFixed(3)} | ${r.timeRatio.toFixed(2)} | ${mb(r.peakWire)} MB/s wire, ${mb(r.peakPayload)} payload (${r.peakRatio.toFixed(3)}) | ${r.drops} | ${r.sha256ok ? 'ok' : 'MISMATCH'} |`);
  }
  const d = rows.find((r) => r.key === 'd');
  if (d) console.log(`\nd: ${changedPages} pages changed = ${mb(changedBytes)} MB (${((100 * changedBytes) / SIZE).toFixed(1)}% of the file); line bytes ÷ changed bytes = ${(d.lineBytes / changedBytes).toFixed(3)}; time ÷ (changed ÷ line) = ${d.idealTimeRatio.toFixed(2)}`);
  for (const r of rows.filter((x) => x.bSourceBytes !== null)) console.log(`${r.key}: DC-B's workers read ${mb(r.bSourceBytes)} MB from their source (${(r.bSourceBytes / SIZE).toFixed(3)} × size); B→A bytes on the line ${mb(r.backBytes)} MB`);
  for (const [k, why] of Object.entries(skipped)) console.log(`${k}: NOT RUN: ${why}`);
  console.log('goals: line ÷ size 1.00 for b, c (≈ changed share for d); origin ÷ size 1.00 for c; time ÷ (size ÷ line) ≤ 1.15; peak ≤ 1.05 × cap');
  await mkdir(join(root, 'bench/out'), { recursive: true });
  const config = { size: SIZE, pageSize: PAGE, clients: N, line: opt.line, lineBytesPerSecond: LINE_BPS, budget: BUDGET, originRate: opt['origin-rate'], change: Number(opt.change), changedPages, changedBytes, support };
  await writeFile(join(root, 'bench/out/lab-dc.json'), JSON.stringify({ config, loadavg: (await load).trim(), rows, skipped }, null, 2) + '\n');
  if (rows.some((r) => !r.sha256ok)) process.exitCode = 1;
}

/** Worker, etcd and origin logs survive the run in bench/out/lab-dc-logs/ (a1.log, b-remote-b1.log…). */
async function keepLogs() {
  const out = join(root, 'bench/out/lab-dc-logs');
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  const entries = await readdir(work, { recursive: true }).catch(() => []);
  for (const rel of entries.filter((e) => e.endsWith('.log'))) await copyFile(join(work, rel), join(out, rel.replace(/\/worker\.log$/, '.log').replaceAll('/', '-')));
}

let cleaning = null;
function cleanup() {
  cleaning ??= (async () => {
    meter.current?.close();
    await lab.stopAll();
    try {
      execFileSync(netlab, ['down'], { stdio: ['ignore', 'ignore', 'inherit'] });
    } catch (err) {
      console.error(`netlab-dc down: ${err.message}`);
    }
    await keepLogs().catch((err) => console.error(`keeping the logs: ${err.message}`));
    await rm(work, { recursive: true, force: true });
    await rm(store, { recursive: true, force: true });
  })();
  return cleaning;
}
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => cleanup().finally(() => process.exit(130)));

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(cleanup);
