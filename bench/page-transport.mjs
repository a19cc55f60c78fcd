#!/usr/bin/env node
// The page transport's receive cost: one worker over a local directory, warm pages, the whole
// file read page by page (window of 8 requests, as the SDK) by one client process through
//   undici  — PageFetcher with FANOUT_PAGE_TRANSPORT=undici (the old transport)
//   socket  — PageFetcher with the lean HTTP/1.1 client (lib/leanhttp, the default); the reader
//             gives each page's chunks back with release() once done, as a sink does
//   socket-kept — the same without release(): every read lands in fresh memory
//   raw     — a raw net.Socket reader: hand-written GET, onread into one reused 1 MiB buffer,
//             CRC32 per read, no parser beyond finding the head's end (the floor for HTTP)
//   curl    — curl fetching the same page URLs (8 in parallel, keep-alive)
// Reports CPU seconds (user+sys) of the client per GiB and wall time, median of --runs, and
// each figure as a ratio to the raw reader measured in the same run.
//
//   npm run build && node bench/page-transport.mjs [--size 1GiB] [--runs 3] [--page-size 4MiB]
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { benchArgs, median, parseSize, root, startServe, stopServe, writeRandomFile } from './common.mjs';

const WINDOW = 8;
const args = benchArgs({ size: '1GiB', runs: '3', 'page-size': '4MiB', mode: 'main' });

async function main() {
  const size = parseSize(args.size);
  const runs = Number(args.runs);
  const work = await mkdtemp(join(tmpdir(), 'fanout-transport-'));
  let worker;
  let endpoint;
  try {
    const srcDir = join(work, 'src');
    await mkdir(srcDir);
    process.stderr.write(`writing a ${size} byte random file…\n`);
    process.stderr.write(`load average at start: ${(await readFile('/proc/loadavg', 'utf8')).trim()}\n`);
    await writeRandomFile(join(srcDir, 'model.bin'), size);
    ({ proc: worker, endpoint } = await startServe(srcDir, join(work, 'store'), { capacity: `${Math.ceil((size * 1.5) / 2 ** 20)}MiB`, stdio: 'inherit', extraArgs: ['--page-size', args['page-size']] }));
    const cluster = await (await fetch(`${endpoint}/v1/cluster`)).json();
    const info = await (await fetch(`${endpoint}/v1/stat/data/model.bin`)).json();
    const job = { endpoint, id: cluster.self, version: info.version, size: info.size, pageSize: cluster.pageSize };
    const pages = Math.ceil(size / job.pageSize);
    const urls = Array.from({ length: pages }, (_, i) => `${endpoint}/v1/page/data/model.bin?v=${encodeURIComponent(job.version)}&size=${size}&i=${i}`);
    // Warm every page (and the OS cache under the store), then check the hits' send path.
    await curlRun(urls, work);
    await curlRun(urls, work);
    const status = await (await fetch(`${endpoint}/v1/status`)).json();
    process.stderr.write(`worker send path: ${status.sendPath}; pages cached: ${status.pages}\n`);

    const results = { undici: [], socket: [], 'socket-kept': [], raw: [], curl: [] };
    for (let run = 0; run < runs; run++) {
      for (const mode of ['raw', 'socket', 'socket-kept', 'undici', 'curl']) {
        const workerBefore = await cpuOf(worker.pid);
        const r = mode === 'curl' ? await curlRun(urls, work) : await clientRun(mode, job);
        r.workerCpu = (await cpuOf(worker.pid)) - workerBefore;
        results[mode].push(r);
        process.stderr.write(`run ${run + 1} ${mode}: ${r.wall.toFixed(2)} s wall, ${r.cpu.toFixed(2)} s client CPU, ${r.workerCpu.toFixed(2)} s worker CPU\n`);
      }
    }
    const gib = size / 2 ** 30;
    const summary = {};
    for (const [mode, list] of Object.entries(results)) {
      summary[mode] = { wallSeconds: median(list.map((r) => r.wall)), cpuSecondsPerGiB: median(list.map((r) => r.cpu)) / gib, workerCpuSecondsPerGiB: median(list.map((r) => r.workerCpu)) / gib };
    }
    const raw = summary.raw;
    for (const s of Object.values(summary)) {
      s.cpuRatioToRaw = s.cpuSecondsPerGiB / raw.cpuSecondsPerGiB;
      s.wallRatioToRaw = s.wallSeconds / raw.wallSeconds;
    }
    const result = { size, runs, pageSize: job.pageSize, window: WINDOW, sendPath: status.sendPath, loadavg: (await readFile('/proc/loadavg', 'utf8')).trim(), summary };
    console.log(JSON.stringify(result, null, 2));
    console.log('\n| reader | wall s | client CPU s/GiB | ÷ raw (CPU) | ÷ raw (wall) | worker CPU s/GiB |\n|---|---|---|---|---|---|');
    for (const [mode, s] of Object.entries(summary)) {
      console.log(`| ${mode} | ${s.wallSeconds.toFixed(2)} | ${s.cpuSecondsPerGiB.toFixed(2)} | ${s.cpuRatioToRaw.toFixed(2)} | ${s.wallRatioToRaw.toFixed(2)} | ${s.workerCpuSecondsPerGiB.toFixed(2)} |`);
    }
  } finally {
    await stopServe(worker);
    await rm(work, { recursive: true, force: true });
  }
}

/** user+sys seconds of a process so far, from /proc. */
async function cpuOf(pid) {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** A client child process; it reports its own CPU and wall time around the read only (not Node's start-up). */
function clientRun(mode, job) {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, FANOUT_PAGE_TRANSPORT: mode === 'undici' ? 'undici' : 'socket' };
    const proc = spawn(process.execPath, [join(root, 'bench/page-transport.mjs'), '--mode', mode, '--job', JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'inherit'], env });
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`${mode} client exited ${code}`))));
  });
}

/** curl over the page URLs, 8 in parallel on kept-alive connections; CPU of curl from bash's `times`. */
async function curlRun(urls, work) {
  const config = join(work, 'curl.cfg');
  await writeFile(config, urls.map((u) => `url = "${u}"\noutput = "/dev/null"\n`).join(''));
  const script = `s=$(date +%s.%N); curl -sf --no-progress-meter --parallel --parallel-max ${WINDOW} -K ${config} || exit 1; e=$(date +%s.%N); echo "$s $e"; times`;
  const out = await new Promise((resolve, reject) => {
    const proc = spawn('bash', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    proc.stdout.on('data', (d) => (text += d));
    proc.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`curl exited ${code}`))));
  });
  const [times, , children] = out.trim().split('\n');
  const [start, end] = times.split(' ').map(Number);
  const seconds = (t) => {
    const m = /(\d+)m([\d.]+)s/.exec(t);
    return Number(m[1]) * 60 + Number(m[2]);
  };
  const [user, sys] = children.split(' ').map(seconds);
  return { wall: end - start, cpu: user + sys };
}

async function client(mode, job) {
  const pages = Math.ceil(job.size / job.pageSize);
  const lengthOf = (i) => Math.min(job.pageSize, job.size - i * job.pageSize);
  let readPage;
  let close = async () => {};
  if (mode === 'raw') {
    const sockets = Array.from({ length: WINDOW }, () => new RawPageSocket(job.endpoint));
    const free = [...sockets];
    readPage = async (i) => {
      const socket = free.pop();
      const path = `/v1/page/data/model.bin?v=${encodeURIComponent(job.version)}&size=${job.size}&i=${i}`;
      await socket.get(path, lengthOf(i));
      free.push(socket);
    };
    close = async () => sockets.forEach((s) => s.socket?.destroy());
  } else {
    const { PageFetcher } = await import(join(root, 'dist/src/lib/cluster/index.js'));
    const fetcher = new PageFetcher({ transport: mode === 'undici' ? 'undici' : 'socket', connectionsPerWorker: WINDOW });
    const member = { id: job.id, url: job.endpoint, capacity: 1 };
    readPage = async (i) => {
      const chunks = await fetcher.fetch(member, { mount: 'data', path: 'model.bin', version: job.version, size: job.size, index: i }, lengthOf(i));
      if (chunks.length === 0) throw new Error('empty page');
      // A consumer done with a page gives its chunks back (as a sink does once they are written).
      if (mode === 'socket') for (const chunk of chunks) fetcher.release(chunk);
    };
    close = () => fetcher.close();
  }
  // Warm-up outside the measurement: connections, JIT, and the GC of start-up's garbage.
  await Promise.all(Array.from({ length: WINDOW }, (_, i) => readPage(i % pages)));
  await new Promise((r) => setTimeout(r, 100));
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let next = 0;
  await Promise.all(Array.from({ length: WINDOW }, async () => {
    while (next < pages) await readPage(next++);
  }));
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const used = process.cpuUsage(cpu0);
  await close();
  process.stdout.write(JSON.stringify({ wall, cpu: (used.user + used.system) / 1e6 }));
}

/**
 * The floor for an HTTP page reader in Node: keep-alive socket, reads into one reused buffer,
 * a CRC32 per read, the head found and its content-length read, nothing kept.
 */
class RawPageSocket {
  constructor(endpoint) {
    this.url = new URL(endpoint);
    this.buffer = Buffer.allocUnsafe(1024 * 1024);
  }

  get(path, length) {
    return new Promise((resolve, reject) => {
      let head = true;
      let remaining = 0;
      let crc = 0;
      this.onChunk = (chunk) => {
        if (head) {
          const end = chunk.indexOf('\r\n\r\n');
          if (end === -1) return reject(new Error('head split across reads'));
          const text = chunk.toString('latin1', 0, end);
          if (!text.startsWith('HTTP/1.1 200')) return reject(new Error(text.split('\r\n')[0]));
          remaining = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? NaN);
          if (remaining !== length) return reject(new Error(`not a content-length page: ${text}`));
          head = false;
          chunk = chunk.subarray(end + 4);
        }
        crc = crc32(chunk, crc);
        remaining -= chunk.length;
        if (remaining === 0) resolve(crc);
      };
      if (!this.socket) {
        this.socket = connect({ host: this.url.hostname, port: Number(this.url.port), onread: { buffer: this.buffer, callback: (n, buf) => this.onChunk(buf.subarray(0, n)) } });
        this.socket.once('error', reject);
      }
      this.socket.write(`GET ${path} HTTP/1.1\r\nhost: ${this.url.host}\r\n\r\n`);
    });
  }
}

// Last, so that the classes above are initialised before a top-level await uses them.
if (args.mode === 'main') await main();
else await client(args.mode, JSON.parse(args.job));
