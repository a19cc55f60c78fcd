#!/usr/bin/env node
// Single-client read throughput: `fanout cat` cold and warm against `cat` from the OS page
// cache and a plain Node HTTP server, all in one run on the same file. Prints ratios (these
// machines are noisy, so only same-run ratios mean anything) and the worker's peak RSS.
//
//   node bench/single-client.mjs [--size 2GiB] [--runs 3] [--page-size 4MiB]
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, bin, median, parseSize, root, timedRun as run, waitHealthy, writeRandomFile } from './common.mjs';

const args = benchArgs({ size: '2GiB', runs: '3', 'page-size': '4MiB' });
const size = parseSize(args.size);
const runs = Number(args.runs);
const pageSize = args['page-size'];

async function peakRss(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

const gbps = (s) => (size / s / 1e9).toFixed(2);

const work = await mkdtemp(join(tmpdir(), 'fanout-bench-'));
try {
  const srcDir = join(work, 'src');
  await mkdir(srcDir);
  const file = join(srcDir, 'model.bin');
  process.stderr.write(`writing a ${size} byte random file…\n`);
  await writeRandomFile(file, size);

  // Baseline 1: cat from the OS page cache (read once to warm it).
  await run('cat', [file]);
  const catTimes = [];
  for (let i = 0; i < runs; i++) catTimes.push(await run('sh', ['-c', `cat ${file} > /dev/null`]));

  // Baseline 2: a plain Node HTTP server streaming the file (1 MiB reads), read by curl.
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-length': size });
    createReadStream(file, { highWaterMark: 1024 * 1024 }).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const httpUrl = `http://127.0.0.1:${server.address().port}/model.bin`;
  const httpTimes = [];
  for (let i = 0; i < runs; i++) httpTimes.push(await run('curl', ['-s', '-o', '/dev/null', httpUrl]));
  server.close();

  // fanout: a one-node cluster over the directory; cold = fresh page store each run.
  const port = 17450 + Math.floor(Math.random() * 1000);
  const endpoint = `http://127.0.0.1:${port}`;
  const coldTimes = [];
  const warmTimes = [];
  let rss = 0;
  for (let i = 0; i < runs; i++) {
    const dataDir = join(work, `store-${i}`);
    const worker = spawn(process.execPath, [bin, 'serve', srcDir, '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--page-size', pageSize, '--capacity', `${Math.ceil((size * 1.5) / 2 ** 20)}MiB`, '--log-level', 'warn'], { stdio: 'inherit' });
    try {
      await waitHealthy(`${endpoint}/healthz`);
      const env = { ...process.env, FANOUT_ENDPOINT: endpoint };
      coldTimes.push(await run('sh', ['-c', `node ${bin} cat /data/model.bin > /dev/null`], { env }));
      warmTimes.push(await run('sh', ['-c', `node ${bin} cat /data/model.bin > /dev/null`], { env }));
      rss = Math.max(rss, await peakRss(worker.pid));
    } finally {
      worker.kill('SIGTERM');
      await new Promise((r) => worker.once('exit', r));
      await rm(dataDir, { recursive: true, force: true });
    }
  }

  const result = {
    size,
    runs,
    pageSize,
    seconds: { cat: median(catTimes), http: median(httpTimes), fanoutCold: median(coldTimes), fanoutWarm: median(warmTimes) },
    workerPeakRssBytes: rss,
  };
  const s = result.seconds;
  console.log(`file ${(size / 2 ** 30).toFixed(2)} GiB, median of ${runs} runs, page size ${pageSize}`);
  console.log('| reader | seconds | GB/s | time vs cat | time vs node http |');
  console.log('|---|---|---|---|---|');
  for (const [name, t] of [['cat (page cache)', s.cat], ['node http + curl', s.http], ['fanout cat, cold', s.fanoutCold], ['fanout cat, warm', s.fanoutWarm]]) {
    console.log(`| ${name} | ${t.toFixed(2)} | ${gbps(t)} | ${(t / s.cat).toFixed(2)}× | ${(t / s.http).toFixed(2)}× |`);
  }
  console.log(`worker peak RSS: ${(rss / 2 ** 20).toFixed(0)} MiB`);
  await mkdir(join(root, 'bench/out'), { recursive: true });
  await writeFile(join(root, 'bench/out/single-client.json'), JSON.stringify(result, null, 2));
} finally {
  await rm(work, { recursive: true, force: true });
}
