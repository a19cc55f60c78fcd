import type { MembershipStatus } from '../core/types.js';

/**
 * Why this worker should not get clients' traffic now (GET /readyz answers 503 with it), or
 * undefined when it should. Only for states in which the worker is in no ring: starting, or its
 * id held by another running worker (two workers given one id). Not for an etcd outage: every
 * worker loses etcd at once, and the last known members keep serving reads, so failing them all
 * would take a whole cluster out of its Service for nothing.
 *
 * Readiness, not liveness: /healthz stays 200 in these states. A restart cannot help a worker
 * whose id another holds (started again, it refuses to start: INVALID_CONFIG), while left
 * running it takes its id back by itself once the other worker's record goes.
 */
export function notReadyReason(id: string, membership: MembershipStatus): string | undefined {
  switch (membership.state) {
    case 'starting':
      return `worker ${id} is starting: not registered in the membership yet`;
    case 'id-taken': {
      const holder = membership.heldBy ? ` at ${membership.heldBy.url} (since ${membership.heldBy.since})` : '';
      return `worker id ${id} is held by another running worker${holder}: this worker is in no ring until that one stops; give each worker its own id`;
    }
    default:
      return undefined;
  }
}
