#!/usr/bin/env node
// FUSE mount throughput, all in one run on the same warm cluster (only same-run ratios mean
// anything on these noisy machines):
//   1. one reader of a warm file: SDK read (in a node process), `fanout cat` to /dev/null (process
//      wall time: what a user runs) vs `dd bs=4M` through `fanout mount` (benchmark 3: ≥ 0.8× `fanout
//      cat`) vs `cat` of the source file from the OS page cache;
//   2. 8 concurrent readers of ONE file vs 8 readers of 8 different files, through the mount
//      (aggregate throughput), and one reader of that file alone.
// Every FUSE run starts on a fresh mount, so neither the kernel's page cache nor the mount's
// page cache holds the file: the bytes come from the worker each time. A dd through the mount
// fills the kernel's page cache (a `fanout cat` to /dev/null does not), and on this kind of VM
// fresh memory costs ~2 CPU s per GiB (docs/benchmarks.md, "the VM's price for fresh memory"):
// the dd is also run right after touching that much memory (pretouchMemory), as a second row.
//
//   node bench/mount.mjs [--size 2GiB] [--multi-size 256MiB] [--runs 3] [--page-size 4MiB] [--readers 8] [--max-pages-limit 1024]
// Needs root (FUSE) and the addon (npm run build:native). --max-pages-limit sets the sysctl
// fs.fuse.max_pages_limit for the run (larger direct I/O requests) and restores it after.
import { spawn } from 'node:child_process';
import { benchArgs, bin, median, parseSize, pretouchMemory, root, timedRun as run, waitFor, withMount, writeRandomFile } from './common.mjs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = benchArgs({ size: '2GiB', readers: '8', runs: '3', 'page-size': '4MiB' });
const size = parseSize(args.size);
const readers = Number(args.readers);
const multiSize = parseSize(args['multi-size'] ?? String(Math.floor(size / readers)));
const runs = Number(args.runs);
const pageSize = args['page-size'];

/** Wall time of several commands started together, until the last one ends. */
async function together(commands) {
  const started = process.hrtime.bigint();
  await Promise.all(commands.map(([cmd, argv]) => run(cmd, argv)));
  return Number(process.hrtime.bigint() - started) / 1e9;
}



// The SDK read, timed inside its process (Node's start-up is not part of the read).
const SDK_READ = `
const { FanoutClient } = await import(${JSON.stringify(join(root, 'dist/src/client/index.js'))});
const client = new FanoutClient({ endpoint: process.argv[1] });
await client.cluster();
const started = process.hrtime.bigint();
let bytes = 0;
for await (const chunk of await client.createReadStream(process.argv[2])) bytes += chunk.length;
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await client.close();
if (bytes !== Number(process.argv[3])) throw new Error('short read: ' + bytes);
process.stdout.write(String(seconds));
process.exit(0);
`;

function sdkRead(endpoint, path, bytes) {
  return new Promise((resolve, reject) => {
    let out = '';
    const proc = spawn(process.execPath, ['--input-type=module', '-e', SDK_READ, endpoint, path, String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
    proc.stdout.on('data', (d) => (out += d));
    proc.once('error', reject);
    proc.once('exit', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(`SDK read exited ${code}`))));
  });
}

const gbps = (bytes, s) => bytes / s / 1e9;

const LIMIT = '/proc/sys/fs/fuse/max_pages_limit';
const savedLimit = args['max-pages-limit'] ? (await readFile(LIMIT, 'utf8')).trim() : undefined;
if (savedLimit) await writeFile(LIMIT, String(Number(args['max-pages-limit'])));

const work = await mkdtemp(join(tmpdir(), 'fanout-bench-mount-'));
let worker;
try {
  const srcDir = join(work, 'src');
  const mnt = join(work, 'mnt');
  await mkdir(srcDir);
  await mkdir(mnt);
  process.stderr.write(`writing a ${size} byte file and ${readers} files of ${multiSize} bytes…\n`);
  await writeRandomFile(join(srcDir, 'model.bin'), size);
  const shards = Array.from({ length: readers }, (_, i) => `shard-${i}.bin`);
  for (const shard of shards) await writeRandomFile(join(srcDir, shard), multiSize);

  const port = 18450 + Math.floor(Math.random() * 1000);
  const endpoint = `http://127.0.0.1:${port}`;
  const capacity = `${Math.ceil(((size + readers * multiSize) * 1.5) / 2 ** 20)}MiB`;
  worker = spawn(process.execPath, [bin, 'serve', srcDir, '--listen', `127.0.0.1:${port}`, '--data-dir', join(work, 'store'), '--page-size', pageSize, '--capacity', capacity, '--log-level', 'warn'], { stdio: 'inherit' });
  await waitFor('the worker', async () => (await fetch(`${endpoint}/healthz`)).ok);

  // Warm the cluster (every page in the worker's store) and the OS page cache.
  const sdk = (path, bytes) => sdkRead(endpoint, path, bytes);
  await sdk('/data/model.bin', size);
  for (const shard of shards) await sdk(`/data/${shard}`, multiSize);
  await run('cat', [join(srcDir, 'model.bin')]);

  const times = { sdk: [], fanoutCat: [], fuseDd: [], fuseDdPretouched: [], cat: [], single: [], oneFile: [], manyFiles: [] };
  for (let i = 0; i < runs; i++) {
    times.sdk.push(await sdk('/data/model.bin', size));
    times.fanoutCat.push(await run('sh', ['-c', `"${process.execPath}" "${bin}" cat /data/model.bin --endpoint ${endpoint} > /dev/null`]));
    times.fuseDd.push(await withMount(endpoint, mnt, (m) => run('dd', [`if=${join(m, 'data/model.bin')}`, 'of=/dev/null', 'bs=4M', 'status=none'])));
    await pretouchMemory(size * 1.25);
    times.fuseDdPretouched.push(await withMount(endpoint, mnt, (m) => run('dd', [`if=${join(m, 'data/model.bin')}`, 'of=/dev/null', 'bs=4M', 'status=none'])));
    times.cat.push(await run('sh', ['-c', `cat ${join(srcDir, 'model.bin')} > /dev/null`]));
    const dd = (m, name) => ['dd', [`if=${join(m, 'data', name)}`, 'of=/dev/null', 'bs=4M', 'status=none']];
    times.single.push(await withMount(endpoint, mnt, (m) => together([dd(m, shards[0])])));
    times.oneFile.push(await withMount(endpoint, mnt, (m) => together(shards.map(() => dd(m, shards[0])))));
    times.manyFiles.push(await withMount(endpoint, mnt, (m) => together(shards.map((s) => dd(m, s)))));
    process.stderr.write(`run ${i + 1}/${runs} done\n`);
  }

  const t = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  const rate = {
    sdk: gbps(size, t.sdk),
    fanoutCat: gbps(size, t.fanoutCat),
    fuseDd: gbps(size, t.fuseDd),
    fuseDdPretouched: gbps(size, t.fuseDdPretouched),
    cat: gbps(size, t.cat),
    single: gbps(multiSize, t.single),
    oneFile: gbps(readers * multiSize, t.oneFile),
    manyFiles: gbps(readers * multiSize, t.manyFiles),
  };
  const result = {
    size,
    multiSize,
    readers,
    runs,
    pageSize,
    seconds: t,
    gbps: rate,
    ratios: { fuseVsFanoutCat: rate.fuseDd / rate.fanoutCat, fusePretouchedVsFanoutCat: rate.fuseDdPretouched / rate.fanoutCat, fuseVsSdk: rate.fuseDd / rate.sdk, oneFileVsManyFiles: rate.oneFile / rate.manyFiles, oneFileVsSingle: rate.oneFile / rate.single, fuseVsCat: rate.fuseDd / rate.cat },
  };
  console.log(`warm file ${(size / 2 ** 30).toFixed(2)} GiB, page size ${pageSize}, median of ${runs} runs`);
  console.log('| reader | seconds | GB/s |');
  console.log('|---|---|---|');
  console.log(`| SDK read (createReadStream) | ${t.sdk.toFixed(2)} | ${rate.sdk.toFixed(2)} |`);
  console.log(`| \`fanout cat\` > /dev/null (process wall time) | ${t.fanoutCat.toFixed(2)} | ${rate.fanoutCat.toFixed(2)} |`);
  console.log(`| FUSE: dd bs=4M | ${t.fuseDd.toFixed(2)} | ${rate.fuseDd.toFixed(2)} |`);
  console.log(`| FUSE: dd bs=4M, memory pretouched | ${t.fuseDdPretouched.toFixed(2)} | ${rate.fuseDdPretouched.toFixed(2)} |`);
  console.log(`| cat of the source from the OS page cache | ${t.cat.toFixed(2)} | ${rate.cat.toFixed(2)} |`);
  console.log(`| FUSE: 1 reader of one ${(multiSize / 2 ** 20).toFixed(0)} MiB file | ${t.single.toFixed(2)} | ${rate.single.toFixed(2)} |`);
  console.log(`| FUSE: ${readers} readers of one ${(multiSize / 2 ** 20).toFixed(0)} MiB file (aggregate) | ${t.oneFile.toFixed(2)} | ${rate.oneFile.toFixed(2)} |`);
  console.log(`| FUSE: ${readers} readers of ${readers} different files (aggregate) | ${t.manyFiles.toFixed(2)} | ${rate.manyFiles.toFixed(2)} |`);
  console.log(`FUSE / fanout cat = ${result.ratios.fuseVsFanoutCat.toFixed(2)} (target ≥ 0.8; memory pretouched ${result.ratios.fusePretouchedVsFanoutCat.toFixed(2)}); FUSE / SDK = ${result.ratios.fuseVsSdk.toFixed(2)}; ${readers} of one / ${readers} of ${readers} = ${result.ratios.oneFileVsManyFiles.toFixed(2)} (target ≥ 0.8); ${readers} of one / 1 = ${result.ratios.oneFileVsSingle.toFixed(2)}`);
  await mkdir(join(root, 'bench/out'), { recursive: true });
  await writeFile(join(root, 'bench/out/mount.json'), JSON.stringify(result, null, 2));
} finally {
  if (savedLimit) await writeFile(LIMIT, savedLimit);
  if (worker) {
    worker.kill('SIGTERM');
    await new Promise((r) => worker.once('exit', r));
  }
  await rm(work, { recursive: true, force: true });
}
