import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';

export interface EtcdServer {
  /** http://127.0.0.1:PORT (https:// with tls), for etcd3's `hosts` or EtcdMembership's `endpoints`. */
  endpoint: string;
  /** Kills the server and deletes its data dir. */
  stop(): Promise<void>;
  /** SIGKILL, no cleanup: simulates an outage. The data dir stays for restart(). */
  kill(): void;
  /** Starts the server again on the same ports and data dir (after kill()), and waits until healthy. */
  restart(): Promise<void>;
  /** SIGSTOP: a hung member (the kernel still accepts connections; nothing answers). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /**
   * Kills the server, deletes its data dir and starts a new, empty cluster on the same ports: etcd
   * restored from nothing (every key, lease and revision gone; revisions start again at 1).
   */
  wipe(): Promise<void>;
}

const ETCD_BINARY = process.env.ETCD_BINARY ?? '/usr/bin/etcd';
const READY_TIMEOUT_MS = 15_000;

/**
 * Starts a private single-node etcd on free loopback ports with a temp data dir. The fast
 * heartbeat/election flags make it ready in well under a second, and after a restart too.
 */
export interface EtcdOptions {
  /** Serve clients over TLS with this certificate; with clientCertAuth, clients must show one signed by `ca`. */
  tls?: { cert: string; key: string; ca: string; clientCertAuth?: boolean; client?: { cert: string; key: string } };
  /** `--quota-backend-bytes`: a tiny one lets a test fill etcd until its NOSPACE alarm. */
  quotaBackendBytes?: number;
  /** Run in this network namespace (a NetLab host), serving clients on its address. */
  host?: { namespace: string; address: string };
}

export async function startEtcd(options: EtcdOptions = {}): Promise<EtcdServer> {
  const { tls, host } = options;
  const dataDir = await mkdtemp(join(tmpdir(), 'fanout-etcd-'));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const clientUrl = `${tls ? 'https' : 'http'}://${host?.address ?? '127.0.0.1'}:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name', 'test',
    '--data-dir', dataDir,
    '--listen-client-urls', clientUrl,
    '--advertise-client-urls', clientUrl,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `test=${peerUrl}`,
    '--heartbeat-interval', '10',
    '--election-timeout', '100',
    '--logger', 'zap',
    '--log-level', 'error',
  ];
  if (options.quotaBackendBytes !== undefined) args.push('--quota-backend-bytes', String(options.quotaBackendBytes));
  // etcd asks every client for a certificate once it is given a trusted CA file: only with clientCertAuth.
  if (tls) args.push('--cert-file', tls.cert, '--key-file', tls.key, ...(tls.clientCertAuth ? ['--trusted-ca-file', tls.ca, '--client-cert-auth'] : []));

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  // etcd must not outlive a test process that dies without calling stop().
  const killOnExit = () => child?.kill('SIGKILL');
  process.once('exit', killOnExit);

  const launch = async () => {
    let stderr = '';
    // `ip netns exec` execs etcd: the pid stays etcd's.
    const command = host ? ['ip', 'netns', 'exec', host.namespace, ETCD_BINARY, ...args] : [ETCD_BINARY, ...args];
    const proc = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (text: string) => (stderr = (stderr + text).slice(-4000)));
    let gone = false;
    exited = new Promise<void>((resolve) => {
      proc.once('exit', () => ((gone = true), resolve()));
      // A binary that cannot be spawned emits 'error' and never 'exit'.
      proc.once('error', (err) => ((stderr += `\nspawn failed: ${err.message}`), (gone = true), resolve()));
    });
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (gone) throw new Error(`etcd exited before becoming healthy:\n${stderr}`);
      if (await healthy(clientUrl, tls)) return;
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`etcd not healthy after ${READY_TIMEOUT_MS} ms:\n${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  const kill = () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };

  try {
    await launch();
  } catch (err) {
    kill();
    await exited;
    process.removeListener('exit', killOnExit);
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }

  return {
    endpoint: clientUrl,
    kill,
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    async restart() {
      kill();
      await exited;
      await launch();
    },
    async wipe() {
      kill();
      await exited;
      await rm(dataDir, { recursive: true, force: true });
      await launch();
    },
    async stop() {
      kill();
      await exited;
      process.removeListener('exit', killOnExit);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Turns on etcd's password auth with a root user (etcdctl, as an operator would): from then on
 * every client needs the user and password.
 */
export async function enableEtcdAuth(endpoint: string, password: string): Promise<void> {
  const etcdctl = (...args: string[]) => promisify(execFile)('etcdctl', [`--endpoints=${endpoint}`, ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
  await etcdctl('user', 'add', `root:${password}`);
  await etcdctl('user', 'grant-role', 'root', 'root');
  await etcdctl('auth', 'enable');
}

/** GET /health without a keep-alive agent, so no socket outlives the check. */
function healthy(clientUrl: string, tls?: EtcdOptions['tls']): Promise<boolean> {
  return new Promise((resolve) => {
    const get = tls ? httpsGet : httpGet;
    const secure = tls ? { ca: readFileSync(tls.ca), ...(tls.client ? { cert: readFileSync(tls.client.cert), key: readFileSync(tls.client.key) } : {}) } : {};
    const req = get(`${clientUrl}/health`, { agent: false, timeout: 1000, ...secure }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (text: string) => (body += text));
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 && (JSON.parse(body) as { health?: string }).health === 'true');
        } catch {
          resolve(false);
        }
      });
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}
