import { FanoutError } from '../../core/errors.js';
import type { Member } from '../../core/types.js';

/**
 * The check of a `/v1/cluster` answer on the SDK's read path, without zod. Every `fanout cat`
 * and `stat` learns the members first, and loading zod and the schemas took ≈40 ms of CPU, a
 * quarter of the CLI's fixed cost. It accepts and rejects what `clusterInfoSchema` (schemas.ts,
 * the contract the worker's answers are tested against) does, and like it keeps only the known
 * fields; wire.test.ts holds the two to the same answers.
 */
export interface ClusterInfoAnswer {
  self: string;
  pageSize: number;
  replication: number;
  statTtlMs: number;
  members: Member[];
  stale: boolean;
  mounts: string[];
  /** The cluster's id (a cluster reading another refuses to read itself: lib/ufs/fanout.ts). */
  clusterId?: string;
  /** Ids of the clusters this one reads from, directly or through a chain. */
  upstream?: string[];
}

type Check = (value: unknown, at: string) => void;

class Invalid extends Error {
  constructor(
    readonly at: string,
    message: string,
  ) {
    super(message);
  }
}

const fail = (at: string, message: string): never => {
  throw new Invalid(at, message);
};
const isString: Check = (v, at) => typeof v === 'string' || fail(at, 'expected string');
const isNonEmptyString: Check = (v, at) => (isString(v, at), (v as string).length >= 1 || fail(at, 'expected a non-empty string'));
const isNumber: Check = (v, at) => (typeof v === 'number' && Number.isFinite(v)) || fail(at, 'expected number');
const isNonNegative: Check = (v, at) => (isNumber(v, at), (v as number) >= 0 || fail(at, 'expected a number >= 0'));
const isPositiveInt: Check = (v, at) => (isNumber(v, at), (Number.isInteger(v) && (v as number) > 0) || fail(at, 'expected a positive integer'));
const isBoolean: Check = (v, at) => typeof v === 'boolean' || fail(at, 'expected boolean');
const isObject = (v: unknown, at: string): Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : fail(at, 'expected object');
const arrayOf = <T>(v: unknown, at: string, item: (value: unknown, at: string) => T): T[] =>
  Array.isArray(v) ? v.map((x, i) => item(x, at ? `${at}.${i}` : String(i))) : fail(at, 'expected array');
const optional = (check: Check): Check => (v, at) => v === undefined || check(v, at);

function member(value: unknown, at: string): Member {
  const m = isObject(value, at);
  isNonEmptyString(m.id, `${at}.id`);
  isNonEmptyString(m.url, `${at}.url`);
  isNonNegative(m.capacity, `${at}.capacity`);
  optional(isString)(m.datacenter, `${at}.datacenter`);
  return { id: m.id as string, url: m.url as string, capacity: m.capacity as number, ...(m.datacenter !== undefined ? { datacenter: m.datacenter as string } : {}) };
}

const str = (v: unknown, at: string) => (isString(v, at), v as string);

/** The answer as ClusterInfoAnswer, or WORKER_UNAVAILABLE naming `what` and the first bad field. */
export function checkClusterInfo(body: unknown, what: string): ClusterInfoAnswer {
  try {
    const b = isObject(body, '');
    isString(b.self, 'self');
    isPositiveInt(b.pageSize, 'pageSize');
    isPositiveInt(b.replication, 'replication');
    isNonNegative(b.statTtlMs, 'statTtlMs');
    const members = arrayOf(b.members, 'members', member);
    isBoolean(b.stale, 'stale');
    const mounts = arrayOf(b.mounts, 'mounts', str);
    optional(isString)(b.clusterId, 'clusterId');
    const upstream = b.upstream === undefined ? undefined : arrayOf(b.upstream, 'upstream', str);
    return {
      self: b.self as string,
      pageSize: b.pageSize as number,
      replication: b.replication as number,
      statTtlMs: b.statTtlMs as number,
      members,
      stale: b.stale as boolean,
      mounts,
      ...(b.clusterId !== undefined ? { clusterId: b.clusterId as string } : {}),
      ...(upstream !== undefined ? { upstream } : {}),
    };
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    const where = err.at ? ` at ${err.at}` : '';
    throw new FanoutError('WORKER_UNAVAILABLE', `${what}: not a fanout answer (${err.message}${where})`);
  }
}
