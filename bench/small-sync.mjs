#!/usr/bin/env node
// Benchmark 5's sync part alone, with the sync process's CPU: a release of FILES files of SIZE
// bytes in DIRS directories, one worker (this checkout's), loopback; `fanout sync --once` cold
// (the worker's pages freed first) and warm, RUNS times. With --base CHECKOUT the other build's
// CLI runs too, interleaved with this one (A, B, A, B…) against the same worker, so the load of a
// shared machine falls on both alike. CPU per file is user+sys of the sync process and its
// children (from /proc, through the shell that waits for it), which the load disturbs far less
// than wall time.
//
//   node bench/small-sync.mjs [--files 2000] [--size 64KiB] [--dirs 20] [--runs 3] [--base CHECKOUT] [--cpu-prof DIR] [--perf DIR] [--env K=V] [--node-flags FLAGS]
//
// --node-flags "--a --b=1" starts this checkout's CLI with those Node/V8 flags, the base's without:
// `--base . --node-flags …` is an A/B of a V8 setting on one build.
//
// --perf DIR records a system-wide perf profile of each sync (DIR/<build>-<kind>-<run>.data), the
// worker and the CLI run with --perf-basic-prof so their JS frames have names.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd } from '../dist/test/harness/etcd.js';
import { processTreeCpu } from './cpu.mjs';
import { benchArgs, bin, fanoutMeasured as runMeasured, median, parseSize, publishAppV1, stagedSeconds, startPerf, startServe, stopServe, treeHash, writeSmallFiles } from './common.mjs';

const args = benchArgs({ files: '2000', size: '64KiB', dirs: '20', runs: '3', perf: '' });
const FILES = Number(args.files);
const SIZE = parseSize(args.size);
const DIRS = Number(args.dirs);
const RUNS = Number(args.runs);
const PROF = args['cpu-prof'];
const env = { ...process.env };
if (args.env) for (const kv of args.env.split(',')) env[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
const builds = [{ name: 'this', bin, nodeFlags: (args['node-flags'] ?? '').split(' ').filter(Boolean) }, ...(args.base ? [{ name: 'base', bin: join(args.base, 'bin/fanout.js'), nodeFlags: [] }] : [])];
const log = (line) => process.stderr.write(`[bench] ${line}\n`);

/** Node flags of a process named `file` in DIR/: a CPU profile (--cpu-prof), or JS frame names for perf (--perf). */
const profFlags = (file) => (PROF ? ['--cpu-prof', '--cpu-prof-dir', PROF, '--cpu-prof-name', file] : args.perf ? ['--perf-basic-prof'] : []);

/** The CLI's wall time and CPU (user+sys of the process), profiled with --cpu-prof DIR (the worker too: DIR/worker.cpuprofile, written when it stops). */
const fanoutMeasured = (fanoutBin, argv, name, nodeFlags = []) => runMeasured(fanoutBin, argv, { env, nodeFlags: [...nodeFlags, ...profFlags(`${name}-${Date.now()}.cpuprofile`)] });

const work = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'fanout-bench-sync-'));
const source = join(work, 'source');
const tree = join(source, 'app/v1');
const etcd = await startEtcd();
let worker;
try {
  await writeSmallFiles(tree, { files: FILES, size: SIZE, dirs: DIRS });
  const expected = await treeHash(tree);
  let endpoint;
  ({ proc: worker, endpoint } = await startServe(source, join(work, 'store'), { capacity: `${Math.ceil((FILES * SIZE * 8) / 2 ** 20)}MiB`, env, nodeFlags: profFlags('worker.cpuprofile'), stdio: ['ignore', 'ignore', 'ignore'] }));
  const common = ['--etcd', etcd.endpoint, '--endpoint', endpoint];
  await publishAppV1((argv) => fanoutMeasured(bin, argv, argv[1]), source, common);
  const rows = [];
  for (let run = 0; run < RUNS; run++) {
    for (const build of builds) {
      for (const kind of ['cold', 'warm']) {
        if (kind === 'cold') await fanoutMeasured(bin, ['free', '--release', 'app@v1', ...common], 'free');
        const dir = join(work, `host-${build.name}-${kind}-${run}`);
        const w0 = await processTreeCpu(worker.pid);
        const load = (await readFile('/proc/loadavg', 'utf8')).split(' ')[0];
        const perf = startPerf(args.perf, `${build.name}-${kind}-${run}`);
        const r = await fanoutMeasured(build.bin, ['sync', 'app', '--channel', 'prod', '--once', '--dir', dir, '--host', `${build.name}-${kind}-${run}`, ...common], `sync-${build.name}-${kind}`, build.nodeFlags);
        const wcpu = (await processTreeCpu(worker.pid)) - w0;
        await perf?.stop();
        if ((await treeHash(join(dir, 'current'))) !== expected) throw new Error(`${build.name} ${kind}: synced tree differs from the source`);
        await rm(dir, { recursive: true, force: true });
        const row = { build: build.name, kind, run, load: Number(load), seconds: r.seconds, staged: stagedSeconds(r.err), cpu: r.cpu, user: r.user, worker: wcpu };
        rows.push(row);
        for (const line of r.err.split("\n").filter((l) => /Warning/.test(l))) log(`${build.name} ${kind}: ${line}`);
        log(`${build.name} ${kind} run ${run + 1}: ${r.seconds.toFixed(2)} s (${(FILES / r.seconds).toFixed(0)} files/s, staged ${row.staged} s), sync CPU ${r.cpu.toFixed(2)} s = ${((r.cpu / FILES) * 1e3).toFixed(3)} ms/file (user ${r.user.toFixed(2)}), worker CPU ${wcpu.toFixed(2)} s, load ${load}`);
      }
    }
  }
  console.log(`${FILES} files × ${SIZE} bytes in ${DIRS} directories, one worker, loopback, median of ${RUNS} (load average at the end ${(await readFile('/proc/loadavg', 'utf8')).trim()})`);
  console.log('| build | sync | wall s | files/s | staging s | sync CPU s | CPU ms per file | worker CPU ms per file |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const build of builds) {
    for (const kind of ['cold', 'warm']) {
      const rs = rows.filter((r) => r.build === build.name && r.kind === kind);
      const m = (k) => median(rs.map((r) => r[k]));
      console.log(`| ${build.name} | ${kind} | ${m('seconds').toFixed(2)} | ${(FILES / m('seconds')).toFixed(0)} | ${m('staged').toFixed(2)} | ${m('cpu').toFixed(2)} | ${((m('cpu') / FILES) * 1e3).toFixed(3)} | ${((m('worker') / FILES) * 1e3).toFixed(3)} |`);
    }
  }
} finally {
  await stopServe(worker);
  await etcd.stop?.().catch(() => {});
  await rm(work, { recursive: true, force: true }).catch(() => {});
}
