import type { BigIntStats } from 'node:fs';

/** Identity and change time of a file: a write, truncate or chmod changes ctime, which users cannot set. */
export interface FileStamp {
  ino: number;
  size: number;
  ctimeNs: string;
}

export function stampOf(st: BigIntStats): FileStamp {
  return { ino: Number(st.ino), size: Number(st.size), ctimeNs: String(st.ctimeNs) };
}

/** A regular file untouched since `stamp` was taken (same inode, size and ctime: any write changes the ctime). */
export function matchesStamp(st: BigIntStats | undefined, stamp: FileStamp | undefined): boolean {
  return st !== undefined && stamp !== undefined && st.isFile() && Number(st.ino) === stamp.ino && Number(st.size) === stamp.size && String(st.ctimeNs) === stamp.ctimeNs;
}

/**
 * The format of stamp files (a version's `V@stamps.json`, staging's `.staging-V@stamps.json`),
 * written in each as `format`. 2: every stamp was taken after a reading of the file system's
 * clock later than the file's last change (fsclock.ts), a staged one after a reading begun after
 * its rename, a directory's only when it held exactly its manifest's entries. Files without it
 * were written by older builds, which stamped a file in the tick of its last change (a write in
 * that tick went unseen for good), a staged file against a reading at the run's end, and a
 * repaired tree as it was after the switch: their stamps prove nothing, so none is trusted and
 * the files are hashed once, then stamped in this format.
 */
export const STAMPS_FORMAT = 2;
