import type { Member } from '../../core/types.js';
import { MAX_MEMBERS, arrayOf, checkedAnswer, fail, isBoolean, isNonEmptyString, isNonNegative, isObject, isPositiveInt, isString, optional } from './check.js';

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
  /**
   * Where the answering worker stands in its membership: a client that got this answer from an
   * endpoint knows whether that endpoint is in a ring without asking it for its status. A
   * MembershipState, or one this client does not know (a newer worker's): any string.
   */
  membership?: string;
}

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
  return checkedAnswer(what, () => {
    const b = isObject(body, '');
    isString(b.self, 'self');
    isPositiveInt(b.pageSize, 'pageSize');
    isPositiveInt(b.replication, 'replication');
    isNonNegative(b.statTtlMs, 'statTtlMs');
    const members = arrayOf(b.members, 'members', member);
    if (members.length > MAX_MEMBERS) fail('members', `more than ${MAX_MEMBERS} members`);
    if (new Set(members.map((m) => m.id)).size !== members.length) fail('members', 'a member id twice');
    isBoolean(b.stale, 'stale');
    const mounts = arrayOf(b.mounts, 'mounts', str);
    optional(isString)(b.clusterId, 'clusterId');
    const upstream = b.upstream === undefined ? undefined : arrayOf(b.upstream, 'upstream', str);
    optional(isString)(b.membership, 'membership');
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
      ...(b.membership !== undefined ? { membership: b.membership as string } : {}),
    };
  });
}
