import { totalmem } from 'node:os';

/**
 * The memory limit of this process's container (cgroup v1 `memory.limit_in_bytes` or v2
 * `memory.max`, as libuv reads it at start), or undefined when none is lower than the host's
 * memory. V8 already sizes its heap from it; the worker's fixed page budgets did not, and in a
 * 256 MiB container with 16 MiB pages they alone came to 288 MiB (the OOM killer ended it).
 */
export function containerMemory(): number | undefined {
  const limit = process.constrainedMemory?.() ?? 0;
  return limit > 0 && limit < totalmem() ? limit : undefined;
}

/**
 * `bytes`, or `1/parts` of the container's limit if that is less: each of the worker's page
 * budgets (fills, relays, responses) takes at most an eighth, so together they leave over half
 * the container to the heap, sockets and the runtime.
 */
export function containerShare(bytes: number, limit = containerMemory(), parts = 8): number {
  return limit === undefined ? bytes : Math.min(bytes, Math.floor(limit / parts));
}
