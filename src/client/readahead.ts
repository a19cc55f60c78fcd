// The module itself, not lib/transfer's index: `fanout cat` pays for every module it loads.
import { ByteBudget } from '../lib/transfer/bytebudget.js';
import { containerShare } from '../lib/memory/container.js';

/**
 * Bytes of pages the SDK's reads fetch ahead of their consumers, all clients of the process
 * together (a read's own next page needs none of it, but room in readDemand below:
 * lib/cluster/reader.ts). Before, each read fetched its whole window ahead (6–8 pages), so
 * memory grew with the reads a program started: 1,000 reads of a 32 MiB file at once (1 MiB
 * pages, 3 workers) peaked at 3,065 MiB RSS, and with the default 4 MiB pages would have taken
 * four times that (found by a fault hunt). 256 MiB, as the FUSE mount's readers (mount/reader.ts):
 * a single read's window of 8 pages of 4 MiB is 32 MiB.
 */
export const READ_AHEAD_BYTES = 256 * 1024 * 1024;

/** In a container, at most an eighth of its memory limit (lib/memory/container.ts), as the worker's and the mount's budgets. */
export const readAhead = new ByteBudget(containerShare(READ_AHEAD_BYTES));

/**
 * Bytes of the pages the SDK's reads wait for while they are fetched, all clients of the process
 * together (lib/cluster/reader.ts, `demand`): with `readAhead`, what a process's reads fetch at
 * once is at most 512 MiB, plus the one page each read has handed on and its consumer not yet
 * taken (a program's own to hold). Before, every read fetched its next page whatever the others
 * did: 1,000 busy reads of 4 MiB pages peaked at 2,314 MiB RSS (found by a fault hunt). 256 MiB,
 * as the FUSE mount's `--read-memory`.
 */
export const READ_DEMAND_BYTES = 256 * 1024 * 1024;

export const readDemand = new ByteBudget(containerShare(READ_DEMAND_BYTES));
