import { resolve } from 'node:path';
import { FanoutError } from '../core/errors.js';
import { isValidMountName } from '../core/paths.js';
import { authFromEnvironment, newAdminToken, publishToken, unpublishToken, writeDataDirToken } from '../lib/auth/index.js';
import { loadWorkerConfig, mountSpec, parseWorkerConfig, type WorkerConfig } from '../lib/config/index.js';
import { Worker } from '../worker/worker.js';
import { gatewayBanner, setupGateway, type GatewayFlags, type GatewaySetup } from './gateway.js';
import { followLauncher } from './launcher.js';

/** `fanout serve` (zero-config single node) and `fanout worker` (a cluster member). */

export interface DaemonFlags extends GatewayFlags {
  config?: string;
  mount?: string[];
  listen?: string;
  advertiseUrl?: string;
  dataDir?: string;
  capacity?: string;
  pageSize?: string;
  sourceRate?: string;
  workerSourceRate?: string;
  statTtl?: string;
  etcd?: string;
  id?: string;
  logLevel?: string;
  threads?: string;
}

export async function serve(uri: string | undefined, flags: DaemonFlags): Promise<void> {
  const mounts = parseMounts(flags.mount ?? []);
  if (uri) mounts.data = normalizeUri(uri);
  if (Object.keys(mounts).length === 0) {
    throw new FanoutError('INVALID_ARGUMENT', 'nothing to serve: give a source (fanout serve ./dir) or --mount NAME=URI');
  }
  const config = flags.config
    ? await loadWorkerConfig(flags.config, { ...overrides(flags), mounts })
    : parseWorkerConfig({ ...overrides(flags), mounts });
  config.auth = authFromEnvironment(config.auth);
  // Zero configuration for the local user, a closed door for everyone else: a fresh admin
  // token, published where only this user's CLI and SDK can read it (see lib/auth/localtoken).
  const localToken = newAdminToken();
  config.auth.tokens.push({ token: localToken, role: 'admin' });
  // A single node is its own only peer (it reads pages through its own API), so any secret will do.
  config.auth.clusterSecret ??= newAdminToken();
  await run(config, await setupGateway(config, flags, true), localToken);
}

export async function worker(flags: DaemonFlags): Promise<void> {
  const extra: Record<string, unknown> = overrides(flags);
  if (flags.mount?.length) extra.mounts = parseMounts(flags.mount);
  const config = flags.config ? await loadWorkerConfig(flags.config, extra) : parseWorkerConfig(extra);
  // --etcd replaces the endpoints only: TLS and auth settings of the config file still apply.
  if (flags.etcd) config.membership = { etcd: { prefix: '/fanout/default/members/', leaseTtlSeconds: 10, ...config.membership.etcd, endpoints: flags.etcd.split(',') } };
  if (Object.keys(config.mounts).length === 0) throw new FanoutError('INVALID_CONFIG', 'the worker has no mounts: add "mounts:" to the config');
  config.auth = authFromEnvironment(config.auth);
  await run(config, await setupGateway(config, flags, false));
}

/**
 * How long SIGTERM/SIGINT lets requests in flight finish after the worker left the membership.
 * Below systemd's TimeoutStopSec and Kubernetes' terminationGracePeriodSeconds (30 s in examples/).
 */
const STOP_DRAIN_MS = 10_000;

async function run(config: WorkerConfig, gateway: GatewaySetup, localToken?: string): Promise<void> {
  const node = new Worker(config);
  await node.start();
  const published = localToken ? await publishLocalToken(node, config, localToken) : { files: [], banner: '' };
  process.stderr.write(
    `fanout worker ${config.id} listening on ${node.url}\n` +
      Object.keys(config.mounts).map((name) => `  /${name}/  →  ${mountSpec(config, name).uri}\n`).join('') +
      `  try: fanout ls /${Object.keys(config.mounts)[0]}/ --endpoint ${node.url}${config.tls?.ca ? ` --ca ${config.tls.ca}` : ''}\n` +
      gatewayBanner(config, node.gateway?.url, gateway) +
      published.banner,
  );
  await new Promise<void>((resolveStop) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`fanout: ${signal}, stopping\n`);
      // Drained: requests in flight finish. The same signal again ends the process at once (its
      // once-listener is gone, so the default action applies).
      node
        .stop({ drainMs: STOP_DRAIN_MS })
        .then(() => unpublishToken(published.files, localToken ?? ''))
        .finally(resolveStop);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    followLauncher(() => stop('launcher (npm exec) gone'));
  });
}

/**
 * Leaves serve's admin token where this user's CLI finds it. A config directory that cannot be
 * written costs the zero-configuration lookup only: the token is still in the data directory.
 */
async function publishLocalToken(node: Worker, config: WorkerConfig, token: string): Promise<{ files: string[]; banner: string }> {
  const plain = await writeDataDirToken(config.dataDir, token);
  try {
    const files = await publishToken([node.url, config.advertiseUrl], token);
    return { files, banner: `  admin token: in ${files[0]} for this user's fanout commands; elsewhere FANOUT_TOKEN=$(cat ${plain})\n` };
  } catch (err) {
    return { files: [], banner: `  admin token: not published (${(err as Error).message}); admin commands need FANOUT_TOKEN=$(cat ${plain})\n` };
  }
}

function overrides(flags: DaemonFlags): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (flags.id) out.id = flags.id;
  if (flags.listen) out.listen = flags.listen;
  if (flags.advertiseUrl) out.advertiseUrl = flags.advertiseUrl;
  if (flags.dataDir) out.dataDir = resolve(flags.dataDir);
  if (flags.capacity) out.capacity = flags.capacity;
  if (flags.pageSize) out.pageSize = flags.pageSize;
  if (flags.sourceRate) out.sourceRate = flags.sourceRate;
  if (flags.workerSourceRate) out.workerSourceRate = flags.workerSourceRate;
  if (flags.statTtl) out.statTtl = flags.statTtl;
  if (flags.logLevel) out.logLevel = flags.logLevel;
  if (flags.threads !== undefined) {
    if (!/^[1-9]\d*$/.test(flags.threads)) throw new FanoutError('INVALID_ARGUMENT', `--threads expects a whole number of at least 1, got "${flags.threads}"`);
    out.threads = Number(flags.threads);
  }
  return out;
}

function parseMounts(specs: string[]): Record<string, string> {
  const mounts: Record<string, string> = {};
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    const name = spec.slice(0, eq);
    if (eq <= 0 || !isValidMountName(name)) {
      throw new FanoutError('INVALID_ARGUMENT', `--mount expects NAME=URI with NAME like [a-z0-9._-]+, got "${spec}"`);
    }
    mounts[name] = normalizeUri(spec.slice(eq + 1));
  }
  return mounts;
}

/** A bare directory path becomes an absolute one, so the worker does not depend on its cwd. */
function normalizeUri(uri: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(uri) ? uri : resolve(uri);
}
