#!/usr/bin/env node
// The worker's own cost per small page, cold and warm, without any fanout client: one worker
// (`fanout serve` over a directory of FILES files of SIZE bytes), asked for every file's page
// by POST /v1/pages (ITEMS items a batch, BATCHES batches in flight, as the sync agent asks),
// first cold (pages filled from the source), then warm (from the store). Prints the worker's CPU
// per page (user+sys of all its threads, from /proc), split into the JS thread and the others
// (libuv's pool, GC, send threads), and the wall time, with the load average. `--fanout CHECKOUT`
// runs another build's worker (before/after in one run); `--runs N` repeats cold+warm on fresh
// page stores (pages freed) and prints the median.
//
//   node bench/small-fills.mjs [--files 2000] [--size 64KiB] [--items 64] [--batches 4] [--runs 3] [--content-keys on] [--fanout CHECKOUT] [--cpu-prof DIR]
//
// --content-keys on: the files are published as release app@v1 (an etcd is started for it) and
// every item carries its page's SHA-256, as the sync agent's do: the page is stored under that
// key, and a fill checks its bytes against it.
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pageKey } from '../dist/src/lib/pagekey/index.js';
import { benchArgs, bin, fanoutMeasured, median, parseSize, publishAppV1, startServe, stopServe, writeSmallFiles } from './common.mjs';
import { startEtcd } from '../dist/test/harness/etcd.js';

const args = benchArgs({ files: '2000', size: '64KiB', items: '64', batches: '4', runs: '3', 'content-keys': 'off' });
const CONTENT_KEYS = args['content-keys'] !== 'off';
const FILES = Number(args.files);
const SIZE = parseSize(args.size);
const ITEMS = Number(args.items);
const BATCHES = Number(args.batches);
const RUNS = Number(args.runs);
const BIN = args.fanout ? join(args.fanout, 'bin/fanout.js') : bin;
const log = (line) => process.stderr.write(`[bench] ${line}\n`);

const TICKS = 100; // USER_HZ
/** CPU seconds of each thread of `pid`: { main, others } (the main thread's tid is the pid). */
async function threadCpu(pid) {
  let main = 0;
  let others = 0;
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const text = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => undefined);
    if (!text) continue;
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const seconds = (Number(fields[11]) + Number(fields[12])) / TICKS;
    if (Number(tid) === pid) main += seconds;
    else others += seconds;
  }
  return { main, others };
}

const work = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'fanout-bench-fills-'));
let worker;
let etcd;
try {
  const source = join(work, 'source');
  // 100 files a directory; under app/v1/ to be published as a release with --content-keys.
  const tree = CONTENT_KEYS ? 'app/v1/' : '';
  const paths = (await writeSmallFiles(join(source, tree), { files: FILES, size: SIZE, dirs: Math.ceil(FILES / 100) })).map((p) => tree + p);
  const refs = [];
  for (const path of paths) {
    const st = await stat(join(source, path));
    const hash = CONTENT_KEYS ? { hash: createHash('sha256').update(await readFile(join(source, path))).digest('hex') } : {};
    refs.push({ mount: 'data', path, version: `${st.size}-${Math.floor(st.mtimeMs)}`, size: st.size, index: 0, ...hash });
  }

  const prof = args['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', args['cpu-prof']] : [];
  let endpoint;
  ({ proc: worker, endpoint } = await startServe(source, join(work, 'store'), { fanoutBin: BIN, capacity: '4GiB', nodeFlags: prof, extraArgs: ['--s3-listen', 'off'], basePort: 19450 }));
  const token = (await readFile(join(work, 'store', 'admin.token'), 'utf8')).trim();
  if (CONTENT_KEYS) {
    etcd = await startEtcd();
    await publishAppV1((argv) => fanoutMeasured(BIN, argv), source, ['--etcd', etcd.endpoint, '--endpoint', endpoint]);
  }
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
  const { pageSize } = await (await fetch(`${endpoint}/v1/cluster`, { headers })).json();
  const keys = refs.map((ref) => pageKey(ref, pageSize));

  /** Every page once, ITEMS a batch, BATCHES batches in flight; checks every frame is a page. */
  async function readAll() {
    let next = 0;
    let pages = 0;
    const one = async () => {
      while (next < refs.length) {
        const items = refs.slice(next, next + ITEMS);
        next += ITEMS;
        const res = await fetch(`${endpoint}/v1/pages`, { method: 'POST', headers, body: JSON.stringify({ items }) });
        if (res.status !== 200) throw new Error(`batch: HTTP ${res.status} ${await res.text()}`);
        const body = Buffer.from(await res.arrayBuffer());
        for (let at = 0; at < body.length; ) {
          const kind = body.readUInt8(at + 4);
          const length = body.readUInt32BE(at + 8);
          if (kind === 1) throw new Error(`item failed: ${body.subarray(at + 16, at + 16 + length)}`);
          if (kind === 0) pages++;
          at += 16 + length;
        }
      }
    };
    await Promise.all(Array.from({ length: BATCHES }, one));
    if (pages !== refs.length) throw new Error(`${pages} pages of ${refs.length}`);
  }

  async function measured(fn) {
    const before = await threadCpu(worker.pid);
    const started = process.hrtime.bigint();
    await fn();
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const after = await threadCpu(worker.pid);
    return { seconds, main: (after.main - before.main) / FILES, others: (after.others - before.others) / FILES };
  }

  const results = { cold: [], warm: [] };
  for (let run = 0; run < RUNS; run++) {
    const freed = await fetch(`${endpoint}/v1/admin/free`, { method: 'POST', headers, body: JSON.stringify({ keys }) });
    if (!freed.ok) throw new Error(`free: HTTP ${freed.status} ${await freed.text()}`);
    results.cold.push(await measured(readAll));
    results.warm.push(await measured(readAll));
    log(`run ${run + 1}/${RUNS}: ${['cold', 'warm'].map((k) => { const r = results[k].at(-1); return `${k} ${r.seconds.toFixed(2)} s, ${((r.main + r.others) * 1e3).toFixed(3)} ms/page (JS ${(r.main * 1e3).toFixed(3)})`; }).join('; ')}`);
  }
  const loadavg = (await readFile('/proc/loadavg', 'utf8')).trim();
  console.log(`${FILES} pages × ${SIZE} bytes, ${ITEMS} a batch, ${BATCHES} batches in flight, ${CONTENT_KEYS ? 'content keys, ' : ''}one worker (${args.fanout ?? 'this checkout'}), median of ${RUNS} (load average ${loadavg})`);
  console.log('| | wall s | pages/s | worker CPU ms per page | of which JS thread | other threads |');
  console.log('|---|---|---|---|---|---|');
  for (const kind of ['cold', 'warm']) {
    const r = results[kind];
    const total = median(r.map((x) => x.main + x.others));
    const s = median(r.map((x) => x.seconds));
    console.log(`| ${kind} | ${s.toFixed(2)} | ${(FILES / s).toFixed(0)} | ${(total * 1e3).toFixed(3)} | ${(median(r.map((x) => x.main)) * 1e3).toFixed(3)} | ${(median(r.map((x) => x.others)) * 1e3).toFixed(3)} |`);
  }
} finally {
  const ended = await stopServe(worker);
  if (ended) log(`worker exited with ${ended}`);
  await etcd?.stop?.().catch(() => {});
  await rm(work, { recursive: true, force: true }).catch(() => {});
}
