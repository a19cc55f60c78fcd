import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { FanoutError } from '../core/errors.js';
import type { WorkerConfig } from '../lib/config/index.js';
import { HEADERS } from '../lib/wire/index.js';

/**
 * The id every worker of one cluster computes alike, with no new setting: from where its members
 * come from (etcd endpoints and prefix, or the static list), or its own URL when it is alone.
 * Two clusters never share one unless they share their membership, which makes them one cluster.
 * It is what lets a cluster recognise itself at the far end of a fanout:// source (a loop).
 */
export function clusterIdOf(config: WorkerConfig): string {
  const { etcd, static: members } = config.membership;
  const basis = etcd
    ? `etcd\n${[...etcd.endpoints].sort().join('\n')}\n${etcd.prefix}`
    : members?.length
      ? `static\n${members.map((m) => `${m.id} ${m.url}`).sort().join('\n')}`
      : `single\n${config.advertiseUrl}`;
  return createHash('sha256').update(basis).digest('hex').slice(0, 16);
}

/**
 * Refuses a request sent by this very cluster through one of its sources: the remote it reads
 * is itself (directly, or behind an address it does not know as its own).
 */
export function refuseOwnSourceReads(req: IncomingMessage, clusterId: string): void {
  const via = req.headers[HEADERS.via];
  if (via === undefined) return;
  const ids = (Array.isArray(via) ? via.join(',') : via).split(',').map((s) => s.trim());
  if (ids.includes(clusterId)) {
    throw new FanoutError('INVALID_CONFIG', `source loop: this request comes from cluster ${clusterId} itself through a fanout:// source; a cluster cannot be its own source`);
  }
}

/**
 * Refuses, before anything listens, a fanout:// source that names one of this cluster's own
 * addresses (its members, or this worker): the plainest loop, caught without asking anyone.
 */
export function refuseOwnAddresses(config: WorkerConfig, mount: string, endpoints: string[]): void {
  const own = new Set([config.advertiseUrl, `http://${config.listen}`, `https://${config.listen}`, ...(config.membership.static ?? []).map((m) => m.url)].map(hostPort));
  const hit = endpoints.find((e) => own.has(hostPort(e)));
  if (hit !== undefined) {
    throw new FanoutError('INVALID_CONFIG', `mount "${mount}": its source ${hit} is this cluster itself (a loop); a fanout:// source must name another cluster`);
  }
}

function hostPort(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || (u.protocol === 'https:' ? '443' : '80')}`;
  } catch {
    return url;
  }
}
