#!/usr/bin/env node
// Benchmark 5, many small files: a release of FILES files of SIZE bytes in DIRS directories,
// one worker (local directory source), loopback. Measured in one run, median of RUNS:
//   - `fanout sync --once` cold (the worker's pages freed first) and warm (a fresh host dir);
//   - `cat` of every file through a fresh `fanout mount`, cold (path-keyed pages freed): one
//     `find | xargs cat` reader (the kernel asks one lookup/open/read at a time), and 8 readers;
//   - baselines in the same run: `cp -r` of the source tree (OS page cache), `cat` of every
//     source file, and one curl process reading every file from the worker's /v1/data with 32
//     transfers in parallel (worker warm by path after the first mount run).
// Files/s and MB/s for each. Wall times include process start-up (sync, curl, cat, cp); the
// sync agent's own "staged … in X s" is reported beside it. Before each cold phase the memory it
// will write (page files, copies) is touched first (pretouchMemory: on this kind of VM memory left
// free for a few seconds goes back to the host, and writing it again cost a cold sync 0.2–0.3 s,
// measured) — as the lab does; --pretouch off skips that.
//
//   node bench/small-files.mjs [--files 2000] [--size 64KiB] [--dirs 20] [--runs 3] [--cpu-prof DIR] [--fanout CHECKOUT] [--pretouch off]
// Needs root (FUSE), etcd, curl, and the FUSE addon (bash scripts/build-native.sh).
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd } from '../dist/test/harness/etcd.js';
import { processTreeCpu } from './cpu.mjs';
import { benchArgs, bin, fanoutMeasured, median, parseSize, pretouchMemory, publishAppV1, root, stagedSeconds, startServe, stopServe, timedRun, treeHash, withMount as withMountOf, writeSmallFiles } from './common.mjs';

const args = benchArgs({ files: '2000', size: '64KiB', dirs: '20', runs: '3', pretouch: 'on' });
const FILES = Number(args.files);
const SIZE = parseSize(args.size);
const DIRS = Number(args.dirs);
const RUNS = Number(args.runs);
const PROF = args['cpu-prof'];
// --fanout DIR: run another build's CLI and worker (a checkout of an older commit), for before/after figures.
const BIN = args.fanout ? join(args.fanout, 'bin/fanout.js') : bin;
const log = (line) => process.stderr.write(`[bench] ${line}\n`);
const env = { ...process.env };
const withMount = (endpoint, mnt, fn) => withMountOf(endpoint, mnt, fn, { fanoutBin: BIN, nodeFlags: profFlags('mount'), env });
const profFlags = (name) => (PROF ? ['--cpu-prof', '--cpu-prof-dir', PROF, '--cpu-prof-name', `${name}-${Date.now()}.cpuprofile`] : []);

/** Touches what a cold phase writes (the worker's page files, the copies), with room to spare. */
const pretouch = () => (args.pretouch === 'off' ? undefined : pretouchMemory(8 * FILES * SIZE));

/** The CLI's wall time and CPU (user+sys of the process): {seconds, cpu, out, err}. */
const fanout = (argv, name = 'cli') => fanoutMeasured(BIN, argv, { env, nodeFlags: profFlags(name) });

const work = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'fanout-bench-small-'));
const source = join(work, 'source');
const tree = join(source, 'app/v1');
const etcd = await startEtcd();
let worker;
try {
  log(`writing ${FILES} files of ${SIZE} bytes in ${DIRS} directories`);
  const paths = await writeSmallFiles(tree, { files: FILES, size: SIZE, dirs: DIRS });
  const bytes = FILES * SIZE;
  const expected = await treeHash(tree);

  let endpoint;
  ({ proc: worker, endpoint } = await startServe(source, join(work, 'store'), { fanoutBin: BIN, capacity: `${Math.ceil((bytes * 8) / 2 ** 20)}MiB`, env, nodeFlags: profFlags('worker') }));
  const common = ['--etcd', etcd.endpoint, '--endpoint', endpoint];
  await publishAppV1(fanout, source, common);

  const urls = join(work, 'urls.txt');
  await writeFile(urls, paths.map((p) => `url = "${endpoint}/v1/data/data/app/v1/${p}"\noutput = "/dev/null"\n`).join(''));
  // find's order is the directory listings' order: what `cat` of a tree does.
  const catAll = (dir, parallel) => timedRun('sh', ['-c', `cd ${dir} && find . -type f -print0 | xargs -0 -P ${parallel} -n ${Math.ceil(FILES / parallel)} cat > /dev/null`]);

  const t = { syncCold: [], syncColdStaged: [], syncWarm: [], syncWarmStaged: [], mountCold: [], mountCold8: [], cpTree: [], cpR: [], catSource: [], curl: [] };
  const mountCpu = [];
  const cliCpu = { syncCold: [], syncWarm: [], cpTree: [] };
  const workerCpu = [];
  const syncColdCpu = [];
  const syncWarmCpu = [];
  for (let run = 0; run < RUNS; run++) {
    // Baselines first: the source tree is in the OS page cache for everyone.
    const copy = join(work, `cp-${run}`);
    t.cpR.push(await timedRun('cp', ['-r', tree, copy]));
    await rm(copy, { recursive: true, force: true });
    t.catSource.push(await catAll(tree, 1));

    await fanout(['free', '--release', 'app@v1', ...common]);
    await pretouch();
    const cold = join(work, `host-cold-${run}`);
    // The worker's CPU per file during each sync (user+sys from /proc): its cost per cold and warm small page.
    let cpu0 = await processTreeCpu(worker.pid);
    const c = await fanout(['sync', 'app', '--channel', 'prod', '--once', '--dir', cold, '--host', `cold${run}`, ...common], 'sync-cold');
    syncColdCpu.push(((await processTreeCpu(worker.pid)) - cpu0) / FILES);
    t.syncCold.push(c.seconds);
    cliCpu.syncCold.push(c.cpu / FILES);
    t.syncColdStaged.push(stagedSeconds(c.err));
    if ((await treeHash(join(cold, 'current'))) !== expected) throw new Error('cold sync tree differs from the source');
    const warm = join(work, `host-warm-${run}`);
    cpu0 = await processTreeCpu(worker.pid);
    const w = await fanout(['sync', 'app', '--channel', 'prod', '--once', '--dir', warm, '--host', `warm${run}`, ...common], 'sync-warm');
    syncWarmCpu.push(((await processTreeCpu(worker.pid)) - cpu0) / FILES);
    t.syncWarm.push(w.seconds);
    cliCpu.syncWarm.push(w.cpu / FILES);
    t.syncWarmStaged.push(stagedSeconds(w.err));
    if ((await treeHash(join(warm, 'current'))) !== expected) throw new Error('warm sync tree differs from the source');
    await rm(cold, { recursive: true, force: true });
    await rm(warm, { recursive: true, force: true });

    const mnt = join(work, 'mnt');
    await mkdir(mnt, { recursive: true });
    await fanout(['free', '/data/app/v1', ...common]);
    await pretouch();
    t.mountCold.push(
      await withMount(endpoint, mnt, async (m, pid) => {
        // CPU per file of the mount process and of the worker during the read (the load moves wall times more).
        const [mount0, worker0] = [await processTreeCpu(pid), await processTreeCpu(worker.pid)];
        const seconds = await catAll(join(m, 'data/app/v1'), 1);
        mountCpu.push(((await processTreeCpu(pid)) - mount0) / FILES);
        workerCpu.push(((await processTreeCpu(worker.pid)) - worker0) / FILES);
        return seconds;
      }),
    );
    await fanout(['free', '/data/app/v1', ...common]);
    await pretouch();
    t.mountCold8.push(await withMount(endpoint, mnt, (m) => catAll(join(m, 'data/app/v1'), 8)));
    // Path-keyed pages are warm now. `fanout cp` of the directory (older builds copy files only: NaN).
    const cpDest = join(work, `cp-tree-${run}`);
    t.cpTree.push(
      await fanout(['cp', '/data/app/v1/', cpDest, '--endpoint', endpoint], 'cp-tree').then(
        (r) => (cliCpu.cpTree.push(r.cpu / FILES), r.seconds),
        () => NaN,
      ),
    );
    if (!Number.isNaN(t.cpTree.at(-1)) && (await treeHash(cpDest)) !== expected) throw new Error('fanout cp tree differs from the source');
    await rm(cpDest, { recursive: true, force: true });
    // curl reads every file from /v1/data, 32 at a time.
    t.curl.push(await timedRun('curl', ['-sf', '--no-progress-meter', '--parallel', '--parallel-max', '32', '-K', urls]));
    log(`run ${run + 1}/${RUNS}: ${Object.entries(t).map(([k, v]) => `${k} ${v.at(-1).toFixed(2)}`).join(', ')}`);
  }

  const m = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, median(v)]));
  const row = (name, s) => `| ${name} | ${s.toFixed(2)} | ${(FILES / s).toFixed(0)} | ${(bytes / s / 1e6).toFixed(1)} |`;
  const loadavg = (await readFile('/proc/loadavg', 'utf8')).trim();
  console.log(`${FILES} files × ${SIZE} bytes in ${DIRS} directories, one worker, loopback, median of ${RUNS} (load average ${loadavg})`);
  console.log('| what | seconds | files/s | MB/s |');
  console.log('|---|---|---|---|');
  console.log(row('`fanout sync --once`, cold (process wall time)', m.syncCold));
  console.log(row('  of which staging (agent log)', m.syncColdStaged));
  console.log(`|   worker CPU per file during that sync: ${(median(syncColdCpu) * 1e3).toFixed(2)} ms | | | |`);
  console.log(row('`fanout sync --once`, warm (process wall time)', m.syncWarm));
  console.log(row('  of which staging (agent log)', m.syncWarmStaged));
  console.log(`|   worker CPU per file during that sync: ${(median(syncWarmCpu) * 1e3).toFixed(2)} ms | | | |`);
  console.log(row('mount, cold: `xargs cat` of every file, 1 reader', m.mountCold));
  console.log(row('mount, cold: `xargs -P 8 cat`, 8 readers', m.mountCold8));
  console.log(`|   CPU per file of that 1-reader run: mount ${(median(mountCpu) * 1e3).toFixed(2)} ms, worker ${(median(workerCpu) * 1e3).toFixed(2)} ms | | | |`);
  console.log(row('`fanout cp` of the directory, warm (process wall time)', m.cpTree));
  const ms = (xs) => (xs.length ? (median(xs) * 1e3).toFixed(2) : '—');
  console.log(`|   CPU per file of the client process (user+sys, start-up included): sync cold ${ms(cliCpu.syncCold)} ms, warm ${ms(cliCpu.syncWarm)} ms, cp ${ms(cliCpu.cpTree)} ms | | | |`);
  console.log(row('baseline: `cp -r` of the source tree', m.cpR));
  console.log(row('baseline: `xargs cat` of the source files', m.catSource));
  console.log(row('baseline: curl /v1/data, 32 parallel, warm', m.curl));
  await mkdir(join(root, 'bench/out'), { recursive: true });
  await writeFile(join(root, 'bench/out/small-files.json'), JSON.stringify({ files: FILES, size: SIZE, dirs: DIRS, runs: RUNS, loadavg, seconds: t, median: m, workerCpuPerFile: { syncCold: syncColdCpu, syncWarm: syncWarmCpu, mountCold: workerCpu }, mountCpuPerFile: mountCpu, cpuPerFile: cliCpu }, null, 2) + '\n');
} finally {
  const ended = await stopServe(worker);
  if (ended) log(`worker exited with ${ended}`);
  await etcd.stop?.().catch(() => {});
  await rm(work, { recursive: true, force: true }).catch(() => {});
}
