import { FanoutError } from '../../core/errors.js';

/**
 * etcd's answer to a write (a put, a transaction with a put, a lease grant) once its NOSPACE alarm
 * is raised, over gRPC and its JSON gateway alike (gRPC code 8, RESOURCE_EXHAUSTED). Deletes,
 * reads and lease renewals are still served, so a running worker keeps its lease; nothing written
 * succeeds until an operator frees space and disarms the alarm.
 */
const NO_SPACE = /database space exceeded/;

export function isEtcdFull(err: unknown): boolean {
  return err instanceof Error && NO_SPACE.test(err.message);
}

/** ETCD_FULL: what could not be done, why, and the commands that end it. */
export function etcdFullError(endpoints: readonly string[], what: string, cause: unknown): FanoutError {
  return new FanoutError(
    'ETCD_FULL',
    `etcd (${endpoints.join(',')}) is out of space and refuses writes (its NOSPACE alarm: ${(cause as Error).message}): cannot ${what}. ` +
      'Free space and disarm the alarm: etcdctl compact REVISION (the current one, from etcdctl endpoint status -w json), etcdctl defrag, etcdctl alarm disarm; or restart etcd with a larger --quota-backend-bytes',
    { cause },
  );
}
