import type { Logger } from 'pino';
import { ClusterSession } from '../client/session.js';
import type { Clock } from '../core/clock.js';
import type { Member } from '../core/types.js';
import type { AccessGate } from '../lib/auth/index.js';
import { mountSpec, type WorkerConfig } from '../lib/config/index.js';
import { readCa, tlsConnectOptions } from '../lib/tls/index.js';
import { FanoutUfs, openUfs, type Ufs } from '../lib/ufs/index.js';
import { refuseOwnAddresses } from './clusterid.js';
import { mountLineName, type LineSpec } from './sourcebudget.js';
import type { CappedGrant } from '../lib/lines/index.js';
import { LocalFirstFetcher, type LocalPages } from './localpages.js';
import { EtcdMembership, StaticMembership, type Membership } from '../lib/membership/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import { PageStore, type PagePolicy } from '../lib/pagestore/index.js';

/**
 * Parts of a worker built from its config alone, kept out of worker.ts so that the Worker
 * class reads as the composition of its services.
 */

/** The membership of the config: etcd when configured, else the static list (or this worker alone). */
export function membershipFor(config: WorkerConfig['membership'], self: Member, logger: Logger): Membership {
  if (config.etcd) {
    return new EtcdMembership({
      endpoints: config.etcd.endpoints,
      prefix: config.etcd.prefix,
      leaseTtlSeconds: config.etcd.leaseTtlSeconds,
      tls: config.etcd.tls,
      auth: config.etcd.auth,
      self,
      logger: logger.child({ component: 'membership' }),
    });
  }
  return new StaticMembership(config.static?.length ? config.static : [self]);
}

/** The page store of the config, its events counted in `metrics` (read lazily: built after the store) and logged. */
export function workerPageStore(config: WorkerConfig, clock: Clock, deps: { policy: PagePolicy; metrics: () => WorkerMetrics; logger: Logger; wallClock: Clock }): PageStore {
  const { policy, metrics, logger, wallClock } = deps;
  let diskLimited = false;
  return new PageStore(
    { dir: config.dataDir, capacity: config.capacity, watermarks: config.watermarks, pageSize: config.pageSize, canEvict: (key) => !policy.isPinned(key), clock, wallClock },
    {
      onEvict: (count) => metrics().evictions.inc(count),
      onWriteFailure: (reason) => metrics().storeWriteFailures.labels(reason).inc(),
      onCapacityChange: (effective, configured, disk) => {
        // One line when the disk starts or stops limiting the store, not one per check.
        if (effective < configured === diskLimited) return;
        diskLimited = effective < configured;
        const fields = { effective, configured, diskFree: disk?.free, diskTotal: disk?.total };
        if (diskLimited) logger.warn(fields, 'page store capacity lowered to what the disk can hold');
        else logger.info(fields, 'page store capacity back to the configured one');
      },
      onCorrupt: (key) => {
        metrics().checksumFailures.inc();
        logger.warn({ key }, 'page failed checksum verification on disk; dropped and will be refetched');
      },
    },
  );
}

/** The sources of the config's mounts; a fanout:// source naming this cluster's own address is refused. */
export function openMounts(config: WorkerConfig, clusterId: string): Map<string, Ufs> {
  const mounts = new Map<string, Ufs>();
  for (const name of Object.keys(config.mounts)) {
    const { uri, versioning, token, ca } = mountSpec(config, name);
    const { sourceConnect, sourceFirstByte, sourceIdle, sourceList } = config.timeouts;
    const deadlines = { connectMs: sourceConnect, firstByteMs: sourceFirstByte, idleMs: sourceIdle, listMs: sourceList };
    const cluster = { clusterId, pageSize: config.pageSize, token, ca };
    const maxListEntries = config.limits.sourceListEntries;
    const ufs = openUfs(uri, config.s3, { label: `/${name}`, versioning, deadlines, cluster, maxListEntries });
    if (ufs instanceof FanoutUfs) refuseOwnAddresses(config, name, ufs.address.endpoints);
    mounts.set(name, ufs);
  }
  return mounts;
}

/**
 * The lines this worker's mounts cross: the named lines of the config, and for a mount with its
 * own sourceRate a line of its own (leased the same way). Preloads get a tenth of a line at least
 * unless its preloadFloor says otherwise.
 */
export function lineSpecs(config: WorkerConfig): { lines: Record<string, LineSpec>; mountLines: Record<string, string> } {
  const lines: Record<string, LineSpec> = {};
  for (const [line, { rate, preloadFloor }] of Object.entries(config.lines)) lines[line] = { rate, preloadFloor: preloadFloor ?? rate / 10 };
  const mountLines: Record<string, string> = {};
  for (const name of Object.keys(config.mounts)) {
    const { sourceRate, line } = mountSpec(config, name);
    if (line !== undefined) mountLines[name] = line;
    else if (sourceRate > 0) lines[(mountLines[name] = mountLineName(name))] = { rate: sourceRate, preloadFloor: sourceRate / 10 };
  }
  return { lines, mountLines };
}

/**
 * The worker's cluster session: peers pushed from its membership, one set of page pools for
 * peer fills, its own range reads and admin loads, whose fetcher takes the worker's own pages
 * from its store. Peer fills and direct reads carry the peer credential; without a secret they
 * go out as ordinary requests. Peers over https:// are verified against tls.ca, or the system store.
 */
export function peerSession(config: WorkerConfig, gate: AccessGate, clock: Clock, local: () => LocalPages): { session: ClusterSession; fetcher: LocalFirstFetcher } {
  let fetcher: LocalFirstFetcher | undefined;
  const session = new ClusterSession({
    endpoints: [], // members come from the worker's membership (setMembers)
    credentials: { headersFor: () => gate.peerHeaders() },
    direct: gate.peer !== undefined,
    connect: tlsConnectOptions(readCa(config.tls?.ca, 'INVALID_CONFIG')),
    timeouts: { connectMs: config.timeouts.peerConnect, firstByteMs: config.timeouts.peerFirstByte, idleMs: config.timeouts.peerIdle, fillingMs: config.timeouts.peerFilling },
    reportTimeoutMs: 5000,
    clock,
    newFetcher: (options) => (fetcher = new LocalFirstFetcher(local, options)),
  });
  return { session, fetcher: fetcher! };
}

/** How often a line whose grants keep being capped is logged again (they come every renewal, 4 a second). */
const CAPPED_LOG_MS = 60_000;

/**
 * Counts every grant capped at this worker's own line bounds, and logs it when a line's grants
 * start being capped and then once a minute while they are, with how many were: a coordinator
 * configured with another rate caps every renewal.
 */
/** Logs, as a line's coordinator, the rate it holds the cluster to when members' configs change it (once per change). */
export function onLineRate(logger: Logger): (line: string, rate: number, own: number, differing: Map<string, number>) => void {
  return (line, rate, own, differing) => {
    const members = Object.fromEntries(differing);
    if (rate < own) logger.warn({ line, rate, own, members }, `line "${line}": workers are configured with different rates for it; the cluster is held to the least, ${rate} B/s (this worker's is ${own} B/s). Give every worker the same lines.`);
    else logger.info({ line, rate, own, members }, `line "${line}": the cluster is held to this worker's rate again, ${rate} B/s`);
  };
}

export function onGrantCapped(clock: Clock, metrics: () => WorkerMetrics, logger: Logger): (line: string, capped: CappedGrant) => void {
  const logged = new Map<string, { at: number; since: number }>();
  return (line, { granted, applied, over }) => {
    for (const bound of over) metrics().lineGrantsCapped.labels(line, bound).inc();
    const now = clock.now();
    const last = logged.get(line);
    if (last && now - last.at < CAPPED_LOG_MS) {
      last.since++;
      return;
    }
    logged.set(line, { at: now, since: 0 });
    const fields = { line, granted, applied, over, cappedSinceLastLog: last?.since };
    logger.warn(fields, `line "${line}": a coordinator granted more than this worker is configured for (${over.join(', ')}); applied capped. Are the workers configured with different lines?`);
  };
}
