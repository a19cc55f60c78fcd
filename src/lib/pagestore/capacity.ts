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

/** Block size assumed when the file system's cannot be read: ext4's and xfs's usual one. */
export const DEFAULT_BLOCK_SIZE = 4096;

/**
 * The file system's block size (statfs f_bsize): every page file takes whole blocks, so a
 * 200-byte page takes 4 KiB on disk, and a store of small pages counted by their bytes held
 * 20 times its capacity. DEFAULT_BLOCK_SIZE if statfs fails or says something unusable.
 */
export async function fileSystemBlockSize(dir: string): Promise<number> {
  const bsize = await statfs(dir).then(
    (s) => s.bsize,
    () => undefined,
  );
  return bsize !== undefined && Number.isSafeInteger(bsize) && bsize >= 512 && bsize <= 1024 * 1024 ? bsize : DEFAULT_BLOCK_SIZE;
}

/** What `bytes` of a file take on disk: whole blocks of `blockSize`. */
export function onDisk(bytes: number, blockSize: number): number {
  return Math.ceil(bytes / blockSize) * blockSize;
}
