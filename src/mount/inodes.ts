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
  /**
   * The version of the file this inode stands for. Each version of a path is an inode of its own:
   * the kernel keeps its page cache (and mmaps) per inode, and one inode for every version let a
   * reader that opened the old version get pages another reader had just read of the new one.
   * Undefined for directories, and for a file re-created from a held lookup (taken at its next open).
   */
  version?: string;
  /** That version's size and mtime: getattr of an inode whose path has moved on answers them. */
  size?: number;
  mtimeMs?: number;
  /** Version of the file at its last open: reopening the same version keeps the kernel's page cache. */
  openedVersion?: string;
}

/**
 * Inode numbers for paths and their versions. A number is derived from a hash of the path (and a
 * file's version), so it stays the same across lookups, forgets and readdir without remembering
 * every path ever listed; only inodes the kernel holds (looked up, not yet forgotten) are kept.
 * Each path has one current inode (its latest lookup); older ones live on while the kernel holds
 * them, for the readers that opened them.
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

  /** The current inode of `path` if the kernel holds it (looked up, not yet forgotten). */
  find(path: string): Inode | undefined {
    return this.byPath.get(path);
  }

  /** The number `path` at `version` has or would get (for readdir, which creates no kernel reference). */
  numberFor(path: string, version?: string): number {
    const current = this.byPath.get(path);
    return current && current.version === version ? current.ino : this.free(path, version);
  }

  /**
   * Records one kernel reference to `path` at `version` (a successful lookup; none for a
   * directory) and returns its inode, which becomes the path's current one; `attrs`, the
   * version's size and mtime, are kept with it.
   */
  remember(path: string, isDir: boolean, version?: string, attrs?: { size: number; mtimeMs: number }): Inode {
    const fileVersion = isDir ? undefined : version;
    const current = this.byPath.get(path);
    let node = current && current.isDir === isDir && current.version === fileVersion ? current : undefined;
    if (!node) {
      const ino = this.free(path, fileVersion);
      node = this.byIno.get(ino) ?? { ino, path, isDir, version: fileVersion, lookups: 0 };
      this.byIno.set(ino, node);
      this.byPath.set(path, node);
    }
    node.lookups++;
    if (attrs) {
      node.size = attrs.size;
      node.mtimeMs = attrs.mtimeMs;
    }
    return node;
  }

  /**
   * One more kernel reference to inode `ino` of file `path`, given without this side (the addon
   * answered a lookup of a held file); re-created, version unknown, if it was forgotten meanwhile.
   */
  rememberNumber(ino: number, path: string): void {
    let node = this.byIno.get(ino);
    if (!node) {
      node = { ino, path, isDir: false, lookups: 0 };
      this.byIno.set(ino, node);
      if (!this.byPath.has(path)) this.byPath.set(path, node);
    }
    node.lookups++;
  }

  /** The kernel dropped `count` references; the inode goes when none are left (then true). */
  forget(ino: number, count: number): boolean {
    const node = this.byIno.get(ino);
    if (!node || ino === ROOT_INO) return false;
    node.lookups -= count;
    if (node.lookups > 0) return false;
    this.byIno.delete(ino);
    if (this.byPath.get(node.path) === node) this.byPath.delete(node.path);
    return true;
  }

  get size(): number {
    return this.byIno.size;
  }

  /** 52 bits of the hash of the path (and version), exact in a JS number, stepping past numbers in use by others. */
  private free(path: string, version: string | undefined): number {
    const key = version === undefined ? path : `${path}\0${version}`;
    let ino = Number(BigInt.asUintN(52, BigInt('0x' + createHash('sha1').update(key).digest('hex').slice(0, 16))));
    for (;;) {
      const taken = this.byIno.get(ino);
      if (ino > ROOT_INO && (!taken || (taken.path === path && taken.version === version))) return ino;
      ino = (ino + 1) % 2 ** 52;
    }
  }
}
