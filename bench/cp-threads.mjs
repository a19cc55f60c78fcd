#!/usr/bin/env node
// Does `fanout cp` to a file gain from several receiving threads on this machine? One warm
// file (default 1 GiB) copied with positional page writes by 1, then 2, … worker_threads, each
// with its own SDK client (connections, page fetches, checksums) and every Nth page, all
// writing into the same destination file. Median of RUNS, same run, sha256 checked.
//
//   node bench/cp-threads.mjs [--size 1GiB] [--threads 1,2] [--runs 3] [--page-size 4MiB]
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { benchArgs, bin, median, parseSize, root, waitFor, writeRandomFile } from './common.mjs';

const { FanoutClient } = await import(join(root, 'dist/src/client/index.js'));
const { copyPagesAt } = await import(join(root, 'dist/src/lib/transfer/index.js'));

if (!isMainThread) {
  // One receiving thread: its own client, pages t, t+N, t+2N… written at their offsets.
  const { endpoint, path, dest, thread, threads } = workerData;
  const client = new FanoutClient({ endpoint });
  const { pageSize } = await client.cluster();
  const file = await client.stat(path);
  const handle = await open(dest, 'r+');
  const mine = [];
  for (let i = thread; i * pageSize < file.size; i += threads) mine.push(i);
  await copyPagesAt({
    // copyPagesAt places its k-th page at k × pageSize: map that back to page mine[k].
    target: { writev: (buffers, position) => handle.writev(buffers, mine[Math.floor(position / pageSize)] * pageSize + (position % pageSize)) },
    pages: mine.length,
    pageSize,
    pageLength: (k) => Math.min(pageSize, file.size - mine[k] * pageSize),
    window: 8,
    fetch: (k, signal) => client.fetchPage(file, mine[k], signal),
  });
  await handle.close();
  await client.close();
  parentPort.postMessage('done');
} else {
  const args = benchArgs({ size: '1GiB', threads: '1,2', runs: '3', 'page-size': '4MiB' });
  const size = parseSize(args.size);
  const counts = args.threads.split(',').map(Number);
  const work = await mkdtemp(join(tmpdir(), 'fanout-bench-cpthreads-'));
  const port = 19450 + Math.floor(Math.random() * 500);
  const endpoint = `http://127.0.0.1:${port}`;
  let worker;
  try {
    await writeRandomFile(join(work, 'big.bin'), size);
    const expected = await sha(join(work, 'big.bin'));
    worker = spawn(process.execPath, [bin, 'serve', work, '--listen', `127.0.0.1:${port}`, '--data-dir', join(work, 'store'), '--page-size', args['page-size'], '--capacity', `${Math.ceil((size * 2) / 2 ** 20)}MiB`, '--log-level', 'warn'], { stdio: 'inherit' });
    await waitFor('the worker', async () => (await fetch(`${endpoint}/healthz`)).ok);
    await copy(endpoint, join(work, 'warmup.bin'), 1, size); // warms the worker's store
    const seconds = Object.fromEntries(counts.map((n) => [n, []]));
    for (let run = 0; run < Number(args.runs); run++) {
      for (const n of counts) {
        const dest = join(work, `copy-${n}.bin`);
        seconds[n].push(await copy(endpoint, dest, n, size));
        if ((await sha(dest)) !== expected) throw new Error(`${n} threads: copy differs`);
        await rm(dest);
      }
    }
    const loadavg = (await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').trim();
    console.log(`cp of a ${args.size} warm file with positional writes, median of ${args.runs} (load average ${loadavg})`);
    for (const n of counts) console.log(`${n} thread(s): ${median(seconds[n]).toFixed(2)} s, ${(size / median(seconds[n]) / 1e9).toFixed(2)} GB/s  (runs: ${seconds[n].map((s) => s.toFixed(2)).join(', ')})`);
  } finally {
    worker?.kill('SIGTERM');
    if (worker) await new Promise((r) => worker.once('exit', r));
    await rm(work, { recursive: true, force: true });
  }
}

async function copy(endpoint, dest, threads, size) {
  const handle = await open(dest, 'w');
  await handle.truncate(size);
  await handle.close();
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: threads }, (_, thread) => new Promise((resolve, reject) => {
      const w = new Worker(new URL(import.meta.url), { workerData: { endpoint, path: '/data/big.bin', dest, thread, threads } });
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`thread exited ${code}`))));
    })),
  );
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function sha(file) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk);
  return hash.digest('hex');
}
