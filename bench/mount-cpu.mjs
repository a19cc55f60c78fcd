#!/usr/bin/env node
// CPU of a sequential read through the FUSE mount, A/B in one run: another build's mount
// (--base, e.g. /work/main) against this one's (direct I/O with the kernel's default request
// size, direct I/O with fs.fuse.max_pages_limit raised to 1024 for the run, and --no-direct-io),
// and `fanout cat` to /dev/null as the yardstick. One worker (this build's), warm; every mount is
// fresh. CPU seconds from /proc (user+sys, all threads): the mount process over the read, plus
// the reader's own (dd, or the `fanout cat` process). Runs alternate between the variants so the
// load of a shared machine falls on all of them alike; the load average is printed with each run.
//
//   node bench/mount-cpu.mjs [--size 2GiB] [--runs 3] [--base /work/main] [--page-size 4MiB] [--readers 8]
// Needs root (FUSE; the sysctl is raised for its variants only and restored after).
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, bin, median, parseSize, waitFor, withMount, writeRandomFile } from './common.mjs';
import { processTreeCpu, runMeasured } from './cpu.mjs';

const args = benchArgs({ size: '2GiB', runs: '3', 'page-size': '4MiB', readers: '8' });
const size = parseSize(args.size);
const runs = Number(args.runs);
const readers = Number(args.readers);
const LIMIT = '/proc/sys/fs/fuse/max_pages_limit';
const defaultLimit = (await readFile(LIMIT, 'utf8').catch(() => '256')).trim();

const variants = [
  ...(args.base ? [{ name: `base (${args.base})`, bin: join(args.base, 'bin/fanout.js'), limit: defaultLimit, mountArgs: [] }] : []),
  { name: `direct I/O, max_pages_limit ${defaultLimit}`, bin, limit: defaultLimit, mountArgs: [] },
  { name: 'direct I/O, max_pages_limit 1024', bin, limit: '1024', mountArgs: [] },
  { name: '--no-direct-io', bin, limit: defaultLimit, mountArgs: ['--no-direct-io'] },
];

const setLimit = (value) => writeFile(LIMIT, value).catch(() => {});
const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');

const work = await mkdtemp(join(tmpdir(), 'fanout-bench-mountcpu-'));
let worker;
try {
  const srcDir = join(work, 'src');
  const mnt = join(work, 'mnt');
  await mkdir(srcDir);
  await mkdir(mnt);
  await writeRandomFile(join(srcDir, 'model.bin'), size);
  const port = 19450 + Math.floor(Math.random() * 500);
  const endpoint = `http://127.0.0.1:${port}`;
  worker = spawn(process.execPath, [bin, 'serve', srcDir, '--listen', `127.0.0.1:${port}`, '--data-dir', join(work, 'store'), '--page-size', args['page-size'], '--capacity', `${Math.ceil((size * 1.5) / 2 ** 20)}MiB`, '--log-level', 'warn'], { stdio: 'inherit' });
  await waitFor('the worker', async () => (await fetch(`${endpoint}/healthz`)).ok);
  const fanoutCat = () => runMeasured(`"${process.execPath}" "${bin}" cat /data/model.bin --endpoint ${endpoint} > /dev/null`);
  await fanoutCat(); // warm the worker
  const file = (m) => join(m, 'data/model.bin');

  const rows = Object.fromEntries(['fanout cat', ...variants.map((v) => v.name)].map((n) => [n, { wall: [], cpu: [], eight: [] }]));
  for (let run = 0; run < runs; run++) {
    const cat = await fanoutCat();
    rows['fanout cat'].wall.push(cat.seconds);
    rows['fanout cat'].cpu.push(cat.cpu);
    for (const v of variants) {
      await setLimit(v.limit);
      try {
        await withMount(
          endpoint,
          mnt,
          async (m, pid) => {
            const before = await processTreeCpu(pid);
            const dd = await runMeasured(`dd if=${file(m)} of=/dev/null bs=4M status=none`);
            rows[v.name].wall.push(dd.seconds);
            rows[v.name].cpu.push(dd.cpu + (await processTreeCpu(pid)) - before);
            // Readers of one file at once: wall time of all of them.
            const started = process.hrtime.bigint();
            await Promise.all(Array.from({ length: readers }, () => runMeasured(`dd if=${file(m)} of=/dev/null bs=4M count=${Math.ceil(size / readers / (4 << 20))} status=none`)));
            rows[v.name].eight.push(Number(process.hrtime.bigint() - started) / 1e9);
          },
          { fanoutBin: v.bin, mountArgs: v.mountArgs },
        );
      } finally {
        await setLimit(defaultLimit);
      }
    }
    process.stderr.write(`run ${run + 1}/${runs} done, load average ${load()}\n`);
    const last = (xs) => xs.at(-1).toFixed(2);
    for (const [name, r] of Object.entries(rows)) process.stderr.write(`  ${name}: ${last(r.wall)} s wall, ${last(r.cpu)} CPU s${r.eight.length ? `, ${readers} readers of one file ${last(r.eight)} s` : ''}\n`);
  }
  console.log(`${(size / 2 ** 30).toFixed(2)} GiB warm, page size ${args['page-size']}, median of ${runs} runs, load average at the end ${load()}`);
  console.log(`| reader | wall s | CPU s (mount + reader) | ${readers} readers of the first ${(size / 2 ** 20 / readers).toFixed(0)} MiB, wall s |`);
  console.log('|---|---|---|---|');
  for (const [name, r] of Object.entries(rows)) {
    console.log(`| ${name} | ${median(r.wall).toFixed(2)} | ${median(r.cpu).toFixed(2)} | ${r.eight.length ? median(r.eight).toFixed(2) : '–'} |`);
  }
} finally {
  await setLimit(defaultLimit);
  if (worker) {
    worker.kill('SIGTERM');
    await new Promise((r) => worker.once('exit', r));
  }
  await rm(work, { recursive: true, force: true });
}
