#!/usr/bin/env node
// Is the client's CPU per byte the memory of page-sized buffering? One worker over a local
// directory, warm 4 MiB pages sent by sendfile, the whole file read by one client process with
// raw keep-alive sockets (2 connections, 2 pages in flight, as `fanout cat` on one worker),
// the native CRC32 on every byte and every byte written to /dev/null, in these shapes:
//   page  — as the SDK did: reads land in rotating 1 MiB slabs from a pool; a page's slabs are
//           held until the page is whole and verified, then written with one writev and given back
//           (with 2 pages in flight ≈ 8–12 MiB of memory rotates through the caches per page)
//   block — one reused 1 MiB buffer per connection: reads fill it, each full 1 MiB block is
//           verified and written at once, and the next page's socket is not read (paused) until
//           the page before it is out (order kept by the kernel's socket buffers)
//   seq   — the page shape, but read one socket at a time as `block` does: the next page's socket
//           is not read until the page before it is whole (tells the read pattern from the buffer)
//   pipe  — one connection, the same reused 1 MiB block buffer, requests pipelined: two pages
//           asked at once and the next one asked as each ends, so the worker never waits for a
//           request between pages (order kept by the connection itself)
//   range — the block shape over page-aligned spans of /v1/data (--range-pages pages per request,
//           default 16; that route carries no checksum, the reader still computes one per block):
//           what fewer, larger requests would save on both sides
//   sdk   — the SDK itself in-process (readPages → writev → releasePage), without the CLI's start
// Reports client CPU seconds (user+sys, from the client process) and the worker's (from /proc)
// per GiB, wall time and minor faults, median of --runs, and each shape ÷ page in the same run.
// `--modes page,block,sdk,sdk@/other/checkout` also runs the SDK of another checkout's build (an
// A/B of a change, in the same run).
//
//   npx tsc -p tsconfig.json && node bench/block-receive.mjs [--size 1GiB] [--runs 3]
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeSync, writevSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, median, parseSize, root, startServe, stopServe, writeRandomFile } from './common.mjs';

const args = benchArgs({ size: '1GiB', runs: '3', 'page-size': '4MiB', mode: 'main', connections: '2' });
// Slab and block size (--job "slab" overrides it in a client, to try other read sizes).
/** Minor page faults of this process so far (fresh memory faulting in is a cost of its own). */
const minorFaults = () => Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ')[7]);
const SLAB = args.job ? (JSON.parse(args.job).slab ?? 1024 * 1024) : 1024 * 1024;

async function main() {
  const size = parseSize(args.size);
  const runs = Number(args.runs);
  const work = await mkdtemp(join(tmpdir(), 'fanout-blocks-'));
  let worker;
  let endpoint;
  try {
    const srcDir = join(work, 'src');
    await mkdir(srcDir);
    process.stderr.write(`load average at start: ${(await readFile('/proc/loadavg', 'utf8')).trim()}\n`);
    await writeRandomFile(join(srcDir, 'model.bin'), size);
    ({ proc: worker, endpoint } = await startServe(srcDir, join(work, 'store'), { capacity: `${Math.ceil((size * 1.5) / 2 ** 20)}MiB`, stdio: 'inherit', extraArgs: ['--page-size', args['page-size']] }));
    const cluster = await (await fetch(`${endpoint}/v1/cluster`)).json();
    const info = await (await fetch(`${endpoint}/v1/stat/data/model.bin`)).json();
    const job = { endpoint, version: info.version, size: info.size, pageSize: cluster.pageSize, connections: Number(args.connections), rangePages: Number(args['range-pages'] ?? 16) };
    // Warm: every page into the store (a cold answer is chunked, which this reader does not parse), twice for the OS cache.
    for (let i = 0; i < 2; i++) await (await fetch(`${endpoint}/v1/data/data/model.bin`)).arrayBuffer();
    await clientRun('page', job);
    const modes = (args.modes ?? 'page,seq,block,pipe,range,sdk').split(',');
    const results = Object.fromEntries(modes.map((m) => [m, []]));
    for (let run = 0; run < runs; run++) {
      for (const mode of modes) {
        const workerBefore = cpuOf(worker.pid);
        const r = await clientRun(mode, job);
        r.workerCpu = cpuOf(worker.pid) - workerBefore; // the client's warm-up included (4 pages)
        results[mode].push(r);
        process.stderr.write(`run ${run + 1} ${mode}: ${r.wall.toFixed(2)} s wall, ${r.cpu.toFixed(2)} s client CPU (sys ${r.sys.toFixed(2)}), ${r.workerCpu.toFixed(2)} s worker CPU\n`);
      }
    }
    const gib = size / 2 ** 30;
    const summary = {};
    for (const [mode, list] of Object.entries(results)) {
      summary[mode] = { wallSeconds: median(list.map((r) => r.wall)), cpuSecondsPerGiB: median(list.map((r) => r.cpu)) / gib, sysSecondsPerGiB: median(list.map((r) => r.sys)) / gib, workerCpuSecondsPerGiB: median(list.map((r) => r.workerCpu)) / gib };
    }
    const loadavg = (await readFile('/proc/loadavg', 'utf8')).trim();
    console.log(JSON.stringify({ size, runs, loadavg, summary }, null, 2));
    console.log('\n| shape | wall s | client CPU s/GiB | of which sys | ÷ page (CPU) | worker CPU s/GiB |\n|---|---|---|---|---|---|');
    for (const [mode, s] of Object.entries(summary)) {
      console.log(`| ${mode} | ${s.wallSeconds.toFixed(2)} | ${s.cpuSecondsPerGiB.toFixed(2)} | ${s.sysSecondsPerGiB.toFixed(2)} | ${(s.cpuSecondsPerGiB / (summary.page ?? s).cpuSecondsPerGiB).toFixed(2)} | ${s.workerCpuSecondsPerGiB.toFixed(2)} |`);
    }
  } finally {
    await stopServe(worker);
    await rm(work, { recursive: true, force: true });
  }
}

/** user+sys seconds of a process so far, from /proc (clock ticks of 1/100 s). */
function cpuOf(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function clientRun(mode, job) {
  return new Promise((resolve, reject) => {
    const [name, base] = mode.split('@');
    const proc = spawn(process.execPath, [join(root, 'bench/block-receive.mjs'), '--mode', name, '--job', JSON.stringify({ ...job, base })], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`${mode} client exited ${code}`))));
  });
}

async function client(mode, job) {
  if (mode === 'sdk') return sdkClient(job);
  if (mode === 'pipe') return pipeClient(job);
  const { crc32 } = await import(join(root, 'dist/src/lib/checksum/index.js'));
  const out = openSync('/dev/null', 'w');
  const url = new URL(job.endpoint);
  // `range`: the unit asked for is a span of --range-pages pages of /v1/data (block shape, 2 connections).
  const ranged = mode === 'range';
  const unit = ranged ? job.pageSize * (job.rangePages ?? 16) : job.pageSize;
  const pages = Math.ceil(job.size / unit);
  const lengthOf = (i) => Math.min(unit, job.size - i * unit);
  const pathOf = (i) =>
    ranged
      ? { path: '/v1/data/data/model.bin', headers: `range: bytes=${i * unit}-${i * unit + lengthOf(i) - 1}\r\n` }
      : { path: `/v1/page/data/model.bin?v=${encodeURIComponent(job.version)}&size=${job.size}&i=${i}`, headers: '' };
  if (ranged) mode = 'block';
  const slabs = [];
  const takeSlab = () => slabs.pop() ?? Buffer.allocUnsafeSlow(SLAB);
  const conns = Array.from({ length: job.connections }, () => new RawConnection(url, mode === 'seq' ? 'page' : mode, takeSlab, crc32, job.readCap ?? SLAB));
  // Pages in order: page i goes on connection i % n; with `block`, only the page being written is read.
  const readAll = async (count) => {
    const inflight = [];
    let next = 0;
    const launch = () => {
      const i = next++;
      const conn = conns[i % conns.length];
      const { path, headers } = pathOf(i);
      inflight.push(conn.get(path, lengthOf(i), (mode === 'block' || mode === 'seq') && inflight.length > 0, headers));
    };
    while (next < count && inflight.length < conns.length) launch();
    for (let i = 0; i < count; i++) {
      const page = await inflight.shift();
      if (mode === 'seq' && inflight.length > 0) conns[(i + 1) % conns.length].resume();
      if (mode === 'page' || mode === 'seq') {
        writevSync(out, page.chunks);
        for (const slab of page.slabs) if (slabs.length < 48) slabs.push(slab);
      } else {
        if (inflight.length > 0) conns[(i + 1) % conns.length].resume();
      }
      if (next < count) launch();
    }
  };
  for (const c of conns) c.out = out;
  await readAll(Math.min(ranged ? 1 : 4, pages)); // connections, JIT (the worker's CPU figure includes it: 16 MiB, or one range)
  const cpu0 = process.cpuUsage();
  const faults0 = minorFaults();
  const t0 = process.hrtime.bigint();
  await readAll(pages);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const used = process.cpuUsage(cpu0);
  for (const c of conns) c.socket?.destroy(); // a connection never used (fewer units than connections) has none
  closeSync(out);
  process.stdout.write(JSON.stringify({ wall, cpu: (used.user + used.system) / 1e6, sys: used.system / 1e6, faults: minorFaults() - faults0 }));
}

/** The SDK's own path, in-process (no CLI start): readPages → one writev per page to /dev/null → releasePage. */
async function sdkClient(job) {
  const { FanoutClient } = await import(join(job.base ?? root, 'dist/src/client/client.js'));
  const client = new FanoutClient({ endpoint: job.endpoint });
  const out = openSync('/dev/null', 'w');
  const file = await client.stat('/data/model.bin');
  const readAll = async (end) => {
    for await (const page of client.readPages(file, { start: 0, end })) {
      writevSync(out, page);
      client.releasePage(page);
    }
  };
  await readAll(Math.min(job.size, 4 * job.pageSize));
  const cpu0 = process.cpuUsage();
  const faults0 = minorFaults();
  const t0 = process.hrtime.bigint();
  await readAll(job.size);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const used = process.cpuUsage(cpu0);
  await client.close();
  closeSync(out);
  process.stdout.write(JSON.stringify({ wall, cpu: (used.user + used.system) / 1e6, sys: used.system / 1e6, faults: minorFaults() - faults0 }));
}

/** One connection, pipelined page requests, verified 1 MiB blocks written from one reused buffer. */
async function pipeClient(job) {
  const { crc32 } = await import(join(root, 'dist/src/lib/checksum/index.js'));
  const out = openSync('/dev/null', 'w');
  const url = new URL(job.endpoint);
  const lengthOf = (i) => Math.min(job.pageSize, job.size - i * job.pageSize);
  const pathOf = (i) => `/v1/page/data/model.bin?v=${encodeURIComponent(job.version)}&size=${job.size}&i=${i}`;
  const block = Buffer.allocUnsafeSlow(SLAB);
  let fill = 0; // body bytes of the current block at block[0, fill)
  let remaining = 0; // body bytes left of the current response; 0 while a head is expected
  let head = ''; // a head split across reads
  let onPage;
  let socket;
  const pending = []; // page indexes asked, in order
  let asked = 0;
  let count = 0;
  const ask = () => {
    if (asked >= count) return;
    pending.push(asked);
    socket.write(`GET ${pathOf(asked++)} HTTP/1.1\r\nhost: ${url.host}\r\n\r\n`);
  };
  const flushBlock = () => {
    crc32(block.subarray(0, fill), 0);
    writeSync(out, block, 0, fill);
    fill = 0;
  };
  // Bytes [at, at + n) of `block` arrived; body bytes are kept at the block's start.
  const onRead = (n) => {
    let at = fill;
    let end = fill + n;
    while (at < end) {
      if (remaining === 0) {
        const text = head + block.toString('latin1', at, Math.min(end, at + 16384)); // a head is small
        const headEnd = text.indexOf('\r\n\r\n');
        if (headEnd === -1) {
          if (end - at > 16384) throw new Error('head over 16 KiB');
          head = text;
          at = end;
          break;
        }
        const consumed = headEnd + 4 - head.length;
        if (!text.startsWith('HTTP/1.1 200')) throw new Error(text.split('\r\n')[0]);
        head = '';
        remaining = lengthOf(pending[0]);
        at += consumed;
        block.copyWithin(fill, at, end); // the body starts where the block's bytes stop
        end -= at - fill;
        at = fill;
        continue;
      }
      const k = Math.min(end - at, remaining);
      fill += k;
      at += k;
      remaining -= k;
      if (fill === SLAB || remaining === 0) {
        const rest = end - at;
        flushBlock();
        if (rest > 0) block.copyWithin(0, at, end);
        at = 0;
        end = rest;
      }
      if (remaining === 0) {
        pending.shift();
        ask();
        onPage();
      }
    }
    fill = remaining === 0 ? 0 : fill;
    return true;
  };
  await new Promise((resolve, reject) => {
    socket = connect({ host: url.hostname, port: Number(url.port), onread: { buffer: () => block.subarray(fill), callback: (n) => onRead(n) } }, resolve);
    socket.once('error', reject);
  });
  const readAll = (pages) =>
    new Promise((resolve) => {
      let done = 0;
      asked = 0;
      count = pages;
      onPage = () => ++done === pages && resolve();
      ask();
      ask();
    });
  await readAll(Math.min(4, Math.ceil(job.size / job.pageSize)));
  const cpu0 = process.cpuUsage();
  const faults0 = minorFaults();
  const t0 = process.hrtime.bigint();
  await readAll(Math.ceil(job.size / job.pageSize));
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const used = process.cpuUsage(cpu0);
  socket.destroy();
  closeSync(out);
  process.stdout.write(JSON.stringify({ wall, cpu: (used.user + used.system) / 1e6, sys: used.system / 1e6, faults: minorFaults() - faults0 }));
}

/** A keep-alive socket reading Content-Length page answers (the head is assumed to come in one read). */
class RawConnection {
  constructor(url, mode, takeSlab, crc32, readCap) {
    this.url = url;
    this.mode = mode;
    this.takeSlab = takeSlab;
    this.crc32 = crc32;
    this.block = Buffer.allocUnsafeSlow(SLAB);
    this.readCap = readCap;
    this.slab = undefined;
    this.at = 0;
    this.filled = 0;
  }

  resume() {
    this.socket.resume();
  }

  /** Resolves once the page is read: `page` shape with its chunks and slabs, `block` shape once written. */
  get(path, length, paused, headers = '') {
    return new Promise((resolve, reject) => {
      let head = true;
      let remaining = length;
      let crc = 0;
      const chunks = [];
      const held = [];
      this.onRead = (n, buf) => {
        let body;
        if (this.mode === 'page') {
          this.at += n;
          body = buf.subarray(0, n);
        } else {
          body = this.block.subarray(this.filled, this.filled + n);
          this.filled += n;
        }
        if (head) {
          const end = body.indexOf('\r\n\r\n');
          if (end === -1) return reject(new Error('head split across reads'));
          const text = body.toString('latin1', 0, end);
          if (!/^HTTP\/1\.1 20[06]/.test(text)) return reject(new Error(text.split('\r\n')[0]));
          head = false;
          body = body.subarray(end + 4);
          if (this.mode === 'block') {
            // The body bytes of this read move to the block's start (once per page).
            this.block.copyWithin(0, body.byteOffset - this.block.byteOffset, body.byteOffset - this.block.byteOffset + body.length);
            this.filled = body.length;
          }
        }
        remaining -= body.length;
        if (this.mode === 'page') {
          crc = this.crc32(body, crc);
          chunks.push(body);
          if (remaining === 0) {
            held.push(this.slab);
            this.slab = undefined;
            resolve({ chunks, slabs: held });
          }
          return true;
        }
        // block: a full block (or the page's end) is verified and written at once
        if (this.filled === SLAB || remaining === 0) {
          const bytes = this.block.subarray(0, this.filled);
          crc = this.crc32(bytes, 0);
          writeSync(this.out, bytes);
          this.filled = 0;
        }
        if (remaining === 0) resolve(crc);
        return true;
      };
      if (!this.socket) {
        this.socket = connect({
          host: this.url.hostname,
          port: Number(this.url.port),
          onread: {
            buffer: () => {
              if (this.mode === 'block') return this.block.subarray(this.filled, Math.min(SLAB, this.filled + this.readCap));
              if (!this.slab || SLAB - this.at < 64 * 1024) {
                if (this.slab) this.heldSlabs?.push(this.slab);
                this.slab = this.takeSlab();
                this.at = 0;
              }
              return this.slab.subarray(this.at, Math.min(SLAB, this.at + this.readCap));
            },
            callback: (n, buf) => this.onRead(n, buf),
          },
        });
        this.socket.once('error', reject);
      }
      // A page's retired slabs are held with it (given back once the page is written).
      this.heldSlabs = held;
      if (paused) this.socket.pause();
      this.socket.write(`GET ${path} HTTP/1.1\r\nhost: ${this.url.host}\r\n${headers}\r\n`);
    });
  }
}

if (args.mode === 'main') await main();
else await client(args.mode, JSON.parse(args.job));
