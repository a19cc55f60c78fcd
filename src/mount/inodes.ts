import { createHash } from 'node:crypto';

/** The mount's root directory (lists the cluster's mounts). FUSE reserves inode 1 for it. */
export const ROOT_INO = 1;

export interface Inode {
  ino: number;
  /** Fanout path without the leading slash: "" (root), "data", "data/models/a.bin". */
  path: string;
  isDir: boolean;
  /** Kernel references (lookups not yet forgotten). */
  lookups: number;
  /** Version of the file at its last open: reopening the same version keeps the kernel's page cache. */
  openedVersion?: string;
}

/**
 * Inode numbers for paths. A path's number is derived from a hash of the path, so it stays the
 * same across lookups, forgets and readdir without remembering every path ever listed; only
 * inodes the kernel holds (looked up, not yet forgotten) are kept.
 */
export class InodeTable {
  private readonly byIno = new Map<number, Inode>();
  private readonly byPath = new Map<string, Inode>();

  constructor() {
    const root: Inode = { ino: ROOT_INO, path: '', isDir: true, lookups: 1 };
    this.byIno.set(ROOT_INO, root);
    this.byPath.set('', root);
  }

  get(ino: number): Inode | undefined {
    return this.byIno.get(ino);
  }

  /** The inode of `path` if the kernel holds it (looked up, not yet forgotten). */
  find(path: string): Inode | undefined {
    return this.byPath.get(path);
  }

  /** The number `path` has or would get (for readdir, which creates no kernel reference). */
  numberFor(path: string): number {
    return this.byPath.get(path)?.ino ?? this.free(path);
  }

  /** Records one kernel reference to `path` (a successful lookup) and returns its inode. */
  remember(path: string, isDir: boolean): Inode {
    let node = this.byPath.get(path);
    if (!node) {
      node = { ino: this.free(path), path, isDir, lookups: 0 };
      this.byIno.set(node.ino, node);
      this.byPath.set(path, node);
    }
    node.isDir = isDir;
    node.lookups++;
    return node;
  }

  /** The kernel dropped `count` references; the inode goes when none are left (then true). */
  forget(ino: number, count: number): boolean {
    const node = this.byIno.get(ino);
    if (!node || ino === ROOT_INO) return false;
    node.lookups -= count;
    if (node.lookups > 0) return false;
    this.byIno.delete(ino);
    this.byPath.delete(node.path);
    return true;
  }

  get size(): number {
    return this.byIno.size;
  }

  /** 52 bits of the path's hash (exact in a JS number), stepping past numbers in use by other paths. */
  private free(path: string): number {
    let ino = Number(BigInt.asUintN(52, BigInt('0x' + createHash('sha1').update(path).digest('hex').slice(0, 16))));
    while (ino <= ROOT_INO || (this.byIno.has(ino) && this.byIno.get(ino)!.path !== path)) ino = (ino + 1) % 2 ** 52;
    return ino;
  }
}
