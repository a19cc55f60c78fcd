// Worker memory under many clients that stop reading: starts a worker over a local file, warms
// it, opens N readers of /v1/data (or /v1/page) that take the first bytes and then nothing,
// reads the whole file with another client, and prints the worker's RSS (VmRSS) before and at
// peak, then after the readers leave. Usage: node bench/slow-readers.mjs --readers 500 --route data|page|data,page
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './common.mjs';
import { WorkerProcess } from '../dist/test/harness/workers.js';
import { StalledReaders, peakRss, rssOf } from '../dist/test/harness/slowclients.js';

const args = benchArgs({ readers: '500', route: 'data', pages: '16' });
const MiB = 1024 * 1024;
const PAGE = 4 * MiB;
const dir = await mkdtemp(join(tmpdir(), 'fanout-slowbench-'));
const data = randomBytes(Number(args.pages) * PAGE);
await writeFile(join(dir, 'big.bin'), data);
const worker = await WorkerProcess.start({ id: 'slowbench', mounts: { data: dir } });
try {
  const info = await (await fetch(`${worker.url}/v1/stat/data/big.bin`)).json();
  await (await fetch(`${worker.url}/v1/data/data/big.bin`)).arrayBuffer();
  const idle = await rssOf(worker.pid);
  // --route data,page: the scenarios one after the other on the same worker (what the first
  // leaves behind counts against the second).
  for (const route of args.route.split(',')) {
    const paths = Array.from({ length: Number(args.readers) }, (_, i) =>
      route === 'page' ? `/v1/page/data/big.bin?v=${encodeURIComponent(info.version)}&size=${info.size}&i=${i % Number(args.pages)}` : '/v1/data/data/big.bin',
    );
    const before = await rssOf(worker.pid);
    const readers = await StalledReaders.open(worker.url, paths);
    const started = Date.now();
    const other = Buffer.from(await (await fetch(`${worker.url}/v1/data/data/big.bin`)).arrayBuffer());
    const otherMs = Date.now() - started;
    const same = createHash('sha256').update(other).digest('hex') === createHash('sha256').update(data).digest('hex');
    const peak = await peakRss(worker.pid, 20, 250);
    readers.close();
    // After the readers leave: what the worker keeps (garbage page buffers are given back within ~10 s).
    const after = await peakRss(worker.pid, 4, 250);
    await new Promise((r) => setTimeout(r, 12_000));
    const settled = await rssOf(worker.pid);
    console.log(JSON.stringify({ route, readers: readers.started, rssIdleMiB: Math.round(idle / MiB), rssBeforeMiB: Math.round(before / MiB), rssPeakMiB: Math.round(peak / MiB), rssAfterCloseMiB: Math.round(after / MiB), rssSettledMiB: Math.round(settled / MiB), otherClientMs: otherMs, otherClientBytesOk: same }));
  }
} finally {
  await worker.destroy();
  await rm(dir, { recursive: true, force: true });
}
