// Processes in the two-datacenter lab's hosts (bench/lab/netlab-dc.sh): running commands,
// waiting for servers, reading counters, and a fanout cluster of worker hosts. Everything runs
// inside the lab's namespaces (the root namespace has no route into the lab), so HTTP calls are
// `curl` in a host of the right datacenter: a DC-A counter read from a DC-A host never crosses
// the line.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM, then SIGKILL if it has not exited within 10 s. */
export async function stopProcess(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

export class Lab {
  constructor(netlab) {
    this.netlab = netlab;
    this.addrs = {};
    this.procs = new Set();
  }

  addr(host) {
    return (this.addrs[host] ??= execFileSync(this.netlab, ['addr', host], { encoding: 'utf8' }).trim());
  }

  /** A long-running process in HOST (netlab exec replaces itself: the pid is the command's). */
  start(host, cmd, args, logFile) {
    const proc = spawn(this.netlab, ['exec', host, cmd, ...args], { stdio: ['ignore', 'ignore', logFile ? 'pipe' : 'ignore'] });
    if (logFile) proc.stderr.pipe(createWriteStream(logFile));
    proc.on('error', () => {}); // surfaces as a non-zero exit below
    this.procs.add(proc);
    proc.once('exit', () => this.procs.delete(proc));
    return proc;
  }

  /** Runs CMD in HOST to completion; rejects with its stderr on a non-zero exit. */
  run(host, cmd, args, { timeoutMs = 3_600_000 } = {}) {
    return new Promise((resolve, reject) => {
      const child = execFile(this.netlab, ['exec', host, cmd, ...args], { encoding: 'utf8', maxBuffer: 64 << 20, timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        this.procs.delete(child);
        if (err) reject(new Error(`${host}: ${cmd} ${args.join(' ')}: ${err.code ?? err.signal}\n${stderr.slice(-2000)}`));
        else resolve(stdout);
      });
      this.procs.add(child);
    });
  }

  /** GET URL from HOST with curl (5 s deadline); the body as text. */
  get(host, url) {
    return this.run(host, 'curl', ['-sf', '--max-time', '5', url], { timeoutMs: 10_000 });
  }

  /** Polls URL from HOST until it answers 2xx, at most `seconds`; fails early if `proc` exits. */
  async waitHttp(host, url, { seconds = 60, proc, log } = {}) {
    const until = performance.now() + seconds * 1000;
    while (performance.now() < until) {
      if (proc && proc.exitCode !== null) {
        const tail = log ? (await readFile(log, 'utf8').catch(() => '')).slice(-1500) : '';
        throw new Error(`${host}: process exited (${proc.exitCode}) before ${url} answered\n${tail}`);
      }
      try {
        await this.get(host, url);
        return;
      } catch {
        await sleep(200);
      }
    }
    throw new Error(`${url} did not answer from ${host} within ${seconds} s`);
  }

  /** Sum of each named Prometheus series over its labels, as HOST reads it from URL/metrics. */
  async metrics(host, url) {
    const out = {};
    for (const line of (await this.get(host, `${url}/metrics`)).split('\n')) {
      const m = /^([a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
      if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
    }
    return out;
  }

  async stopAll() {
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await Promise.all([...this.procs].map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : null)));
  }
}

/**
 * A fanout cluster on worker hosts of one datacenter (static member list, port 7450), each with a
 * fresh page store under `dir`. `extra(host)` is merged into each worker's config (mounts, lines).
 */
export class LabCluster {
  constructor(lab, { name, hosts, dir, bin, extra }) {
    Object.assign(this, { lab, name, hosts, dir, bin, extra });
    this.members = hosts.map((h) => ({ id: h, url: `http://${lab.addr(h)}:7450` }));
    this.workers = [];
  }

  url(i) {
    return this.members[i % this.members.length].url;
  }

  async start() {
    await rm(this.dir, { recursive: true, force: true });
    for (const [i, host] of this.hosts.entries()) {
      const dir = join(this.dir, host);
      await mkdir(dir, { recursive: true });
      const config = { id: host, listen: `${this.lab.addr(host)}:7450`, dataDir: join(dir, 'data'), membership: { static: this.members }, logLevel: 'warn', ...this.extra(host) };
      await writeFile(join(dir, 'worker.yaml'), JSON.stringify(config, null, 1));
      const log = join(dir, 'worker.log');
      const proc = this.lab.start(host, 'node', [this.bin, 'worker', '--config', join(dir, 'worker.yaml')], log);
      this.workers.push({ host, proc, log, url: this.members[i].url });
    }
    for (const w of this.workers) await this.lab.waitHttp(w.host, `${w.url}/healthz`, { proc: w.proc, log: w.log });
  }

  /** A metric summed over the cluster's workers, each read from its own host. */
  async metric(name) {
    let total = 0;
    for (const w of this.workers) total += (await this.lab.metrics(w.host, w.url))[name] ?? 0;
    return total;
  }

  async stop() {
    await Promise.all(this.workers.map((w) => stopProcess(w.proc)));
    this.workers = [];
  }
}
