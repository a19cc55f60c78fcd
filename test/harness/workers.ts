import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkerConfigInput } from '../../src/lib/config/index.js';
import { freePort, StopWaiting, waitFor } from './ports.js';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const fanoutBin = join(repoRoot, 'bin/fanout.js');

/** Credentials every test worker accepts unless its config says otherwise (FANOUT_TOKEN for the CLI). */
export const TEST_ADMIN_TOKEN = 'test-admin-token-0123456789';
export const TEST_CLUSTER_SECRET = 'test-cluster-secret-0123456789';
export const testAuth = { tokens: [{ token: TEST_ADMIN_TOKEN, role: 'admin' as const }], clusterSecret: TEST_CLUSTER_SECRET };

/** A real worker process started from the CLI, as an operator would run it. */
export class WorkerProcess {
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** For an https worker: trusts its CA. */
  private dispatcher: Agent | undefined;
  /** Open-file limit (soft and hard) the process starts under, through util-linux's prlimit. */
  private nofile: number | undefined;
  /** Variables added to the process's environment (e.g. LD_PRELOAD of libfaketime). */
  private env: NodeJS.ProcessEnv | undefined;
  /** A cgroup v1 memory group directory the process starts in (its memory limit). */
  private cgroup: string | undefined;
  /** The network namespace the process runs in (a host of a NetLab), if not this one. */
  private namespace: string | undefined;

  private constructor(
    readonly id: string,
    readonly url: string,
    readonly dir: string,
    private readonly configFile: string,
  ) {}

  get dataDir(): string {
    return join(this.dir, 'data');
  }

  /** The worker's process id while it runs (for /proc checks: memory, open files). */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** False once the process has exited (a crash, or stop/kill). */
  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  static async start(config: WorkerConfigInput & { id: string }, port?: number, limits?: { nofile?: number; env?: NodeJS.ProcessEnv; cgroup?: string; host?: { namespace: string; address: string } }): Promise<WorkerProcess> {
    port ??= await freePort();
    const dir = await mkdtemp(join(tmpdir(), `fanout-${config.id}-`));
    // With tls, the worker serves https and the harness trusts the worker's own tls.ca.
    const address = limits?.host?.address ?? '127.0.0.1';
    const url = `${config.tls ? 'https' : 'http'}://${address}:${port}`;
    const full = { listen: `${address}:${port}`, dataDir: join(dir, 'data'), logLevel: 'warn', auth: testAuth, ...config };
    const configFile = join(dir, 'worker.yaml');
    await writeFile(configFile, JSON.stringify(full, null, 2));
    const worker = new WorkerProcess(config.id, url, dir, configFile);
    worker.nofile = limits?.nofile;
    worker.env = limits?.env;
    worker.cgroup = limits?.cgroup;
    worker.namespace = limits?.host?.namespace;
    if (config.tls?.ca) worker.dispatcher = new Agent({ connect: { ca: readFileSync(config.tls.ca) } });
    await worker.launch();
    return worker;
  }

  async launch(): Promise<void> {
    const log = createWriteStream(join(this.dir, 'worker.log'), { flags: 'a' });
    const args = [fanoutBin, 'worker', '--config', this.configFile];
    const env = this.env && { ...process.env, ...this.env };
    // prlimit, `ip netns exec` and the cgroup's shell exec node: the pid stays the worker's. The
    // shell joins the cgroup before it execs node, so the worker starts inside it (libuv reads its
    // memory limit at start).
    const command = [
      ...(this.namespace === undefined ? [] : ['ip', 'netns', 'exec', this.namespace]),
      ...(this.nofile === undefined ? [] : ['prlimit', `--nofile=${this.nofile}:${this.nofile}`, '--']),
      ...(this.cgroup === undefined ? [] : ['sh', '-c', `echo $$ > '${this.cgroup}/cgroup.procs' && exec "$0" "$@"`]),
      process.execPath,
      ...args,
    ];
    const proc = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
    proc.stdout!.pipe(log);
    proc.stderr!.pipe(log);
    this.proc = proc;
    this.exited = new Promise((r) => proc.once('exit', () => r()));
    try {
      // A minute: a loaded 2-core CI machine has been seen to need more than 20 s.
      await waitFor(
        `worker ${this.id} /healthz`,
        async () => {
          if (proc.exitCode !== null) throw new StopWaiting(`worker ${this.id} exited with ${proc.exitCode}; see ${this.dir}/worker.log`);
          if (!this.dispatcher) return (await fetch(`${this.url}/healthz`)).ok;
          const res = await request(`${this.url}/healthz`, { dispatcher: this.dispatcher });
          await res.body.dump();
          return res.statusCode === 200;
        },
        60_000,
      );
    } catch (err) {
      // Not left behind: a worker that never became healthy would keep the test process alive.
      proc.kill('SIGKILL');
      await this.exited;
      throw err;
    }
  }

  /** SIGKILL: the process dies at once, without cleanup, as in a crash. */
  async kill(): Promise<void> {
    this.proc?.kill('SIGKILL');
    await this.exited;
  }

  /** SIGSTOP: the process freezes, as on a hung host; the kernel still accepts connections to it. */
  pause(): void {
    this.proc?.kill('SIGSTOP');
  }

  /** SIGCONT after pause(). */
  resume(): void {
    this.proc?.kill('SIGCONT');
  }

  /** SIGTERM: a clean shutdown. */
  async stop(): Promise<void> {
    this.proc?.kill('SIGTERM');
    await this.exited;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  async destroy(): Promise<void> {
    await this.kill();
    await this.dispatcher?.close();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Prometheus counters of this worker, summed over labels. */
  async metrics(): Promise<Record<string, number>> {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    const out: Record<string, number> = {};
    for (const line of text.split('\n')) {
      const match = /^([a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
      if (match) out[match[1]!] = (out[match[1]!] ?? 0) + Number(match[2]);
    }
    return out;
  }
}

/**
 * Restarts `worker` on its port and data with another pageSize (the cluster's page size changes
 * under its users). `whileDown` runs once the worker has exited, before it is started again.
 */
export async function restartWithPageSize(worker: WorkerProcess, pageSize: string, whileDown?: () => Promise<void>): Promise<void> {
  await worker.stop();
  await whileDown?.();
  const file = join(worker.dir, 'worker.yaml');
  const config = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  await writeFile(file, JSON.stringify({ ...config, pageSize }, null, 2));
  await worker.launch();
}

/** Waits until every worker's ring (its /v1/cluster) holds all of `workers`, e.g. one restarted is back in every ring. */
export async function waitForRings(workers: WorkerProcess[], what: string, timeoutMs?: number): Promise<void> {
  await waitFor(
    what,
    async () => {
      const views = await Promise.all(workers.map(async (w) => (await (await fetch(`${w.url}/v1/cluster`)).json()) as { members: unknown[] }));
      return views.every((v) => v.members.length === workers.length);
    },
    timeoutMs,
  );
}

/** Several workers that know each other: through etcd if given, else a static list. */
export async function startCluster(
  count: number,
  config: WorkerConfigInput & { etcd?: string },
): Promise<WorkerProcess[]> {
  const { etcd, ...rest } = config;
  const ports = await Promise.all(Array.from({ length: count }, () => freePort()));
  const ids = ports.map((_, i) => `w${i + 1}`);
  const staticList = ports.map((port, i) => ({ id: ids[i]!, url: `${rest.tls ? 'https' : 'http'}://127.0.0.1:${port}` }));
  const membership = etcd ? { etcd: { endpoints: [etcd], leaseTtlSeconds: 3 } } : { static: staticList };
  const started = await Promise.allSettled(ports.map((port, i) => WorkerProcess.start({ ...rest, id: ids[i]!, membership }, port)));
  const workers = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  try {
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    if (etcd) await waitForRings(workers, 'all workers to see each other');
  } catch (err) {
    // The workers that did start must not outlive a failed start: they would keep the test
    // process alive (a file that never ends) and hold their ports.
    await Promise.all(workers.map((w) => w.destroy().catch(() => {})));
    throw err;
  }
  return workers;
}
