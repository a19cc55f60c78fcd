// Helpers shared by the benchmarks: arguments, sizes, random files, waiting, timing, a worker
// started as a user starts it, the CLI timed with its CPU, benchmark 5's small-file tree.
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { cp, mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const bin = join(root, 'bin/fanout.js');

/** "--size 2GiB --runs 3" → { size: '2GiB', runs: '3' }, over the defaults given. */
export function benchArgs(defaults = {}) {
  const out = { ...defaults };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}

/** "2GiB", "512MiB", "4096" → bytes. */
export function parseSize(text) {
  const m = /^(\d+)(KiB|MiB|GiB)?$/i.exec(String(text));
  if (!m) throw new Error(`bad size ${text}`);
  return Number(m[1]) * ({ kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 }[(m[2] ?? '').toLowerCase()] ?? 1);
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function writeRandomFile(file, bytes) {
  const handle = await open(file, 'w');
  const block = Buffer.alloc(16 * 1024 * 1024);
  for (let written = 0; written < bytes; written += block.length) {
    randomFillSync(block);
    await handle.write(block, 0, Math.min(block.length, bytes - written));
  }
  await handle.close();
}

/** Polls until `check` resolves true (errors count as not yet), for at most 30 s. */
export async function waitFor(what, check) {
  for (let i = 0; i < 600; i++) {
    try {
      if (await check()) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export const waitHealthy = (url) => waitFor(url, async () => (await fetch(url)).ok);

/** Runs a command; resolves with its wall time in seconds (stdout ignored). */
export function timedRun(cmd, argv, opts = {}) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'inherit'], ...opts });
    proc.once('error', reject);
    proc.once('exit', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      code === 0 ? resolve(seconds) : reject(new Error(`${cmd} ${argv.join(' ')} exited ${code}`));
    });
  });
}

/** One sha256 over a directory tree's paths and contents (release manifests left out). */
export async function treeHash(dir) {
  const hash = createHash('sha256');
  const visit = async (d, rel) => {
    for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (e.name === '.fanout-releases') continue;
      const p = join(d, e.name);
      if (e.isDirectory()) await visit(p, `${rel}${e.name}/`);
      else {
        hash.update(`${rel}${e.name}\0`);
        for await (const c of createReadStream(p, { highWaterMark: 1 << 20 })) hash.update(c);
      }
    }
  };
  await visit(dir, '');
  return hash.digest('hex');
}

const isMounted = async (mnt) => (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').some((l) => l.split(' ')[4] === mnt);

/**
 * Runs `fn(mountpoint)` on a fresh `fanout mount` (started as `node [nodeFlags] BIN mount …`),
 * then unmounts it with SIGTERM.
 */
export async function withMount(endpoint, mnt, fn, { fanoutBin = bin, nodeFlags = [], env = process.env, mountArgs = [] } = {}) {
  let log = '';
  const proc = spawn(process.execPath, [...nodeFlags, fanoutBin, 'mount', mnt, '--endpoint', endpoint, '--log-level', 'warn', ...mountArgs], { stdio: ['ignore', 'ignore', 'pipe'], env });
  proc.stderr.on('data', (d) => (log += d));
  const exited = new Promise((r) => proc.once('exit', r));
  try {
    await waitFor('the mount', async () => {
      if (proc.exitCode !== null) throw new Error(`fanout mount exited: ${log}`);
      return log.includes('fanout: mounted') && (await isMounted(mnt));
    });
    return await fn(mnt, proc.pid);
  } catch (err) {
    // The mount's own log says why a read failed (it is quiet otherwise).
    process.stderr.write(`fanout mount log:\n${log}\n`);
    throw err;
  } finally {
    proc.kill('SIGTERM');
    await exited;
  }
}

/**
 * Touches `wanted` bytes of memory (at most what is free now; a tmpfs file written and removed)
 * right before a phase. On this kind of VM the host takes back guest memory that has been free
 * for a few seconds (DAMON pageout, virtio-balloon free page reporting), and the first write to
 * such a page costs ~2 CPU s per GiB inside the guest (measured: 8 writers of 1 GiB to tmpfs
 * 3.7 s right after the same write, 9.0 s after a 15 s pause; `dd` of 9 GiB 18.6 s). A phase
 * that starts after a pause (workers or nginx starting) paid it for every client copy and page,
 * one that followed another phase at once did not: cold ÷ warm measured the hypervisor. Pages
 * freed just now are reused first, so every phase starts from the same state. Two writers, one
 * per core.
 */
export async function pretouchMemory(wanted) {
  // Only memory that is free now: touching more would evict the page cache (the origin's file,
  // the page stores) and the phase would read from disk.
  const free = Number(/MemFree:\s+(\d+) kB/.exec(await readFile('/proc/meminfo', 'utf8'))[1]) * 1024;
  const bytes = Math.max(0, Math.min(wanted, free - 2 ** 30));
  const started = performance.now();
  const parts = 2;
  const count = Math.ceil(bytes / parts / (4 << 20));
  const files = Array.from({ length: parts }, (_, i) => join('/dev/shm', `fanout-lab-pretouch-${process.pid}-${i}`));
  try {
    await Promise.all(files.map((f) => timedRun('dd', ['if=/dev/zero', `of=${f}`, 'bs=4M', `count=${count}`, 'status=none'])));
  } finally {
    for (const f of files) await rm(f, { force: true });
  }
  process.stderr.write(`  (memory pretouched: ${(bytes / 2 ** 30).toFixed(1)} GiB in ${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
}

/**
 * Runs `fanoutBin ...argv` as users do, as an executable (with this Node first on PATH), or
 * `node [nodeFlags] fanoutBin ...argv` when given flags, through a shell that reports the CPU
 * (user+sys from /proc, USER_HZ ticks) of its reaped child, which the load of a shared machine
 * disturbs far less than wall time. Resolves with {seconds, cpu, user, out, err}; rejects on a
 * non-zero exit.
 */
export function fanoutMeasured(fanoutBin, argv, { env = process.env, nodeFlags = [] } = {}) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const script = '"$@"; s=$?; echo "@@stat $(cat /proc/$$/stat)" >&2; exit $s';
    const command = nodeFlags.length > 0 ? [process.execPath, ...nodeFlags, fanoutBin] : [fanoutBin];
    const p = spawn('sh', ['-c', script, 'sh', ...command, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env: withThisNode(env) });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.once('error', reject);
    p.once('exit', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const stat = /@@stat (.*)/.exec(err)?.[1] ?? '';
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const user = Number(fields[13]) / 100; // cutime
      const cpu = user + Number(fields[14]) / 100; // + cstime
      code === 0 ? resolve({ seconds, cpu, user, out, err }) : reject(new Error(`fanout ${argv.join(' ')} exited ${code}\n${out}${err}`));
    });
  });
}

/** `env` with the directory of the Node running the benchmark first on PATH (for the executable's `exec node`). */
function withThisNode(env = process.env) {
  return { ...env, PATH: `${dirname(process.execPath)}:${env.PATH ?? ''}` };
}

/** The sync agent's own staging time, from its "staged …: N bytes in X s" line (NaN without one). */
export const stagedSeconds = (err) => Number(/staged \S+: \d+ bytes in ([\d.]+) s/.exec(err)?.[1] ?? NaN);

/**
 * Benchmark 5's tree: `files` random files of `size` bytes spread over `dirs` directories
 * (dNN/fNNNNN.bin) below `tree`. Resolves with their paths relative to `tree`, in order.
 */
export async function writeSmallFiles(tree, { files, size, dirs }) {
  const block = Buffer.allocUnsafe(size);
  const perDir = Math.ceil(files / dirs);
  const paths = [];
  for (let i = 0; i < files; i++) {
    const dir = `d${String(Math.floor(i / perDir)).padStart(2, '0')}`;
    if (i % perDir === 0) await mkdir(join(tree, dir), { recursive: true });
    const rel = `${dir}/f${String(i).padStart(5, '0')}.bin`;
    randomFillSync(block);
    await writeFile(join(tree, rel), block);
    paths.push(rel);
  }
  return paths;
}

/**
 * One worker as a user starts it (`fanout serve SOURCE`: the directory is mount "data") on a free
 * loopback port, its store in `dataDir`; resolves once healthy with {proc, endpoint}.
 */
export async function startServe(source, dataDir, { fanoutBin = bin, capacity, env = process.env, nodeFlags = [], stdio = ['ignore', 'ignore', 'inherit'], extraArgs = [], basePort = 18450 } = {}) {
  const port = basePort + Math.floor(Math.random() * 1000);
  const endpoint = `http://127.0.0.1:${port}`;
  const argv = [...nodeFlags, fanoutBin, 'serve', source, '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...(capacity ? ['--capacity', capacity] : []), '--log-level', 'warn', ...extraArgs];
  const proc = spawn(process.execPath, argv, { stdio, env });
  await waitFor('the worker', async () => {
    if (proc.exitCode !== null) throw new Error('the worker exited');
    return (await fetch(`${endpoint}/healthz`)).ok;
  });
  return { proc, endpoint };
}

/**
 * Stops a worker started by startServe with SIGTERM and waits for it: it drains, then exits 0,
 * and only then is its --cpu-prof profile written. Resolves with how it ended.
 */
export async function stopServe(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return undefined;
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r(signal ?? `code ${code}`)));
  proc.kill('SIGTERM');
  return exited;
}

/**
 * Publishes the directory /data/app/v1/ of `source` (the worker's mount "data") as release app@v1
 * and promotes it to channel prod, through `run(argv)` (a benchmark's own way to call the CLI).
 */
export async function publishAppV1(run, source, common) {
  await run(['release', 'publish', 'app', '/data/app/v1/', '--version', 'v1', '--mount', `data=${source}`, ...common, '--json']);
  await run(['release', 'promote', 'app', 'v1', '--channel', 'prod', ...common]);
}

/**
 * A release's next version: a copy of directory `from` at `to` with `pct`% of its pages changed
 * (64 random bytes in each chosen page of `pageSize`), every file `fileBytes` long. Resolves with
 * how many pages changed (at least one).
 */
export async function writeChangedCopy(from, to, { fileBytes, pageSize, pct }) {
  await cp(from, to, { recursive: true });
  const names = (await readdir(to)).sort();
  const pages = [];
  for (const name of names) for (let p = 0; p * pageSize < fileBytes; p++) pages.push([name, p]);
  const count = Math.max(1, Math.round((pages.length * pct) / 100));
  for (let i = 0; i < count; i++) {
    const [name, page] = pages.splice(Math.floor(Math.random() * pages.length), 1)[0];
    const h = await open(join(to, name), 'r+');
    await h.write(randomBytes(64), 0, 64, page * pageSize + 17);
    await h.close();
  }
  return count;
}

/**
 * With a DIR: a system-wide perf profile of one phase (DIR/<phase>.data, PERF_FREQ samples per
 * second and CPU, default 199), for what the kernel, the addons' threads and JS (processes run
 * with --perf-basic-prof) spent; stop() ends it. Without one: undefined.
 */
export function startPerf(dir, phase) {
  if (!dir) return undefined;
  const out = join(dir, `${phase.replace(/[^a-z0-9]+/gi, '-')}.data`);
  const proc = spawn('perf', ['record', '-a', '-g', '-F', process.env.PERF_FREQ ?? '199', '-o', out], { stdio: 'ignore' });
  return { stop: () => new Promise((resolve) => { proc.once('exit', resolve); proc.kill('SIGINT'); }) };
}
