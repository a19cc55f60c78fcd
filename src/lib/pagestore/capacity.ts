import { statfs } from 'node:fs/promises';

/**
 * How much the page store may hold: the configured capacity, unless the file system cannot
 * hold that much. A capacity above the disk's size (a 10 GiB default on a 5 GiB volume, or a
 * disk shared with logs and other caches) would otherwise mean that eviction never starts,
 * every write fails with ENOSPC and every page is served uncached, for good.
 */

export interface DiskSpace {
  /** Size of the file system, bytes. */
  total: number;
  /** Bytes an unprivileged writer may still use (statfs f_bavail: root's reserve excluded). */
  free: number;
}

export type StatDisk = (dir: string) => Promise<DiskSpace>;

export const statDisk: StatDisk = async (dir) => {
  const s = await statfs(dir);
  return { total: s.blocks * s.bsize, free: s.bavail * s.bsize };
};

const GiB = 1024 ** 3;

/**
 * Room left free on the file system for everything else (logs, the policy file, pages being
 * written, other tenants): 5% of its size, at least 1 GiB, but never more than 10% of a small
 * file system (2.4 MiB of a 24 MiB one) nor more than 32 GiB of a big one.
 */
export function diskReserve(total: number): number {
  return Math.min(Math.max(0.05 * total, Math.min(GiB, 0.1 * total)), 32 * GiB);
}

/**
 * min(configured, what the store holds + what is free − the reserve). The store's own pages
 * count as room, so evicting them does not shrink the figure: it tracks what the disk could
 * hold for the store, and other writers filling the disk lower it.
 */
export function effectiveCapacity(configured: number, storeUsed: number, disk: DiskSpace): number {
  const fits = storeUsed + disk.free - diskReserve(disk.total);
  return Math.max(0, Math.floor(Math.min(configured, fits)));
}
