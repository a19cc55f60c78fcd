import type { EventEmitter } from 'node:events';
import type { Member, MembershipState, MembershipStatus } from '../../core/types.js';

export type { IgnoredRecord, MembershipState, MembershipStatus } from '../../core/types.js';

/**
 * Where the member list comes from. Every client and worker feeds `members()` into the same
 * hash ring, so all that matters is that they converge on the same list, and that an outage
 * of the backing store never empties it: the last known list keeps serving reads.
 *
 * Events: 'change' (members: Member[]) whenever the list changes; 'stale' (stale: boolean)
 * when the backing store becomes unreachable or reachable again.
 */
export interface Membership extends EventEmitter {
  start(): Promise<void>;
  /** Last known membership, sorted by id; always available. */
  members(): Member[];
  /** True while the backing store is unreachable (the list may be out of date). */
  readonly stale: boolean;
  /** Where this process stands: for /v1/status, the worker's readiness and its metrics. */
  status(): MembershipStatus;
  /** status()'s state alone, without the lists: cheap enough for every page fill. */
  state(): MembershipState;
  /** Deregisters self if registered, and releases every resource (no timers left running). */
  stop(): Promise<void>;
}

/** The subset of a pino logger this module uses; a pino instance fits as is. */
export interface MembershipLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export const silentLogger: MembershipLogger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
};

/** Sorted copy, so equal memberships compare equal whatever order they were learned in. */
export function sortMembers(members: Iterable<Member>): Member[] {
  return [...members].map((m) => ({ ...m })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export function sameMembers(a: readonly Member[], b: readonly Member[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((m, i) => m.id === b[i]!.id && m.url === b[i]!.url && m.capacity === b[i]!.capacity && m.datacenter === b[i]!.datacenter);
}
