#!/usr/bin/env node
// Read time of one file through a 3-worker cluster with every worker running, then with one
// worker SIGSTOPped (a hung host: it accepts connections and never answers). Each read uses a
// fresh SDK client (no health memory), entering through a running worker. Build first (npx tsc).
//
//   node bench/stopped-worker.mjs [--size 128MiB] [--runs 3] [--page-size 4MiB] [--hedge auto]
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, median, parseSize, root, writeRandomFile } from './common.mjs';

const { FanoutClient } = await import(join(root, 'dist/src/client/index.js'));
const { startCluster } = await import(join(root, 'dist/test/harness/workers.js'));

const args = benchArgs({ size: '128MiB', runs: '3', 'page-size': '4MiB', hedge: 'auto' });
const size = parseSize(args.size);
const runs = Number(args.runs);
const hedge = args.hedge === 'auto' || args.hedge === 'off' ? args.hedge : Number(args.hedge);

const work = await mkdtemp(join(tmpdir(), 'fanout-stopbench-'));
const workers = await startCluster(3, { mounts: { data: work }, pageSize: args['page-size'], capacity: `${Math.ceil((size * 4) / 2 ** 20)}MiB` });
const stopped = workers[1];
try {
  await writeRandomFile(join(work, 'warm.bin'), size);
  const read = async (path) => {
    const client = new FanoutClient({ endpoint: workers[0].url, hedge });
    const started = process.hrtime.bigint();
    const hash = createHash('sha256');
    for await (const chunk of await client.createReadStream(path)) hash.update(chunk);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    await client.close();
    return { seconds, sha: hash.digest('hex') };
  };
  const first = await read('/data/warm.bin'); // fills every owner's store
  const up = [];
  for (let i = 0; i < runs; i++) up.push((await read('/data/warm.bin')).seconds);
  stopped.pause();
  const down = [];
  for (let i = 0; i < runs; i++) {
    const r = await read('/data/warm.bin');
    if (r.sha !== first.sha) throw new Error('wrong bytes with a stopped worker');
    down.push(r.seconds);
  }
  await writeRandomFile(join(work, 'cold.bin'), size);
  const cold = await read('/data/cold.bin');
  const fmt = (xs) => `median ${median(xs).toFixed(2)} s (runs: ${xs.map((x) => x.toFixed(2)).join(', ')})`;
  console.log(`file ${args.size}, pages ${args['page-size']}, hedge ${args.hedge}, 3 workers`);
  console.log(`cached, all workers running: ${fmt(up)}`);
  console.log(`cached, one worker SIGSTOPped: ${fmt(down)}`);
  console.log(`never read before, one worker SIGSTOPped: ${cold.seconds.toFixed(2)} s`);
} finally {
  stopped.resume();
  await Promise.all(workers.map((w) => w.destroy()));
  await rm(work, { recursive: true, force: true });
}
