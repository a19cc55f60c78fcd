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
