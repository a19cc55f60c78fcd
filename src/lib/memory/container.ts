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

/**
 * What to tell an operator when the container's share cuts a size set for `what` (a flag or a
 * config key), or undefined when it does not: the size asked for is not the size used.
 */
export function containerCutNote(what: string, bytes: number, limit = containerMemory()): string | undefined {
  const share = containerShare(bytes, limit);
  if (limit === undefined || share >= bytes) return undefined;
  return `${what} of ${bytes} bytes is cut to ${share}, an eighth of this container's memory limit (${limit} bytes); raise the container's limit to use it whole`;
}
