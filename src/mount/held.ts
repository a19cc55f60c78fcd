import type { StatResult } from '../client/index.js';
import type { InodeTable } from './inodes.js';
import type { FuseAddon, FuseSession, HeldStats } from './native.js';
import type { MountPages } from './pages.js';

/** What the hand-down needs to know of the mount's metadata. */
export interface HeldMetadata {
  /** How long the stat answer for `path` is still trusted at `version` (ms; 0 if not cached, or at another version). */
  statValidMs(path: string, version: string): Promise<number>;
}

export interface HeldOptions {
  /** Attribute timeout told to the kernel (seconds). */
  attrTimeoutS: number;
  /** Files up to this size are handed down whole (the addon's reply path has no cap; memory has). */
  maxFileBytes: number;
  fileMode: number;
  /** mtime shown for files whose source gives none. */
  defaultMtimeMs: number;
}

/**
 * Small files handed down to the addon (native/fuse/held.h), so that the kernel's lookup, getattr,
 * open, read and release of them are answered on the FUSE threads instead of crossing to this thread:
 * per file of a tree that is five requests, each a thread hand-off, a handler and a reply
 * syscall on the thread that also receives every page.
 *
 * A file is handed down when the directory prefetch's fetch of its (only) page arrives, with
 * what is left of its stat TTL: the addon serves it no longer than this side would trust the
 * same stat answer. Only files whose inode the kernel holds are handed down (their number is
 * then the one the kernel will open), and a forgotten inode is dropped. Files not held, larger
 * files, expired entries and every failure still come here, answered as before.
 */
export class HeldFiles {
  private session: FuseSession | undefined;

  constructor(
    private readonly addon: FuseAddon,
    private pages: MountPages,
    private readonly inodes: InodeTable,
    private readonly meta: HeldMetadata,
    private readonly options: HeldOptions,
  ) {}

  /** The FUSE session once mounted; until then (and with an addon without `hold`) nothing is handed down. */
  attach(session: FuseSession): void {
    if (typeof this.addon.hold === 'function') this.session = session;
  }

  /** Fetches a page to keep for a read expected soon; a small file's page is handed down whole. Never throws. */
  prefetch(file: StatResult, index: number): void {
    if (!this.session || index !== 0 || file.size > Math.min(this.pages.pageSize, this.options.maxFileBytes)) {
      return this.pages.prefetch(file, index);
    }
    // The page stays in the mount's cache too: if the addon's copy expires before the open (a
    // stat TTL nearly over), the read finds it there instead of asking the worker again. Not
    // held (a failed hand-down): the read comes here and finds the page.
    this.pages.prefetch(file, index, (lease) => this.handDown(file, lease.chunks));
  }

  /**
   * The mount counts in another page size now: pages come from `pages`. Files handed down stay:
   * each is a whole file, whatever page size it came in.
   */
  follow(pages: MountPages): void {
    this.pages = pages;
  }

  /**
   * The addon answered a lookup of held file `name` in directory `parentIno` with inode `ino`
   * (told before its reply went out, so before any FORGET of it): one more kernel reference to it.
   */
  lookedUp(ino: number, parentIno: number, name: string): void {
    const parent = this.inodes.get(parentIno);
    if (parent) this.inodes.rememberNumber(ino, parent.path === '' ? name : `${parent.path}/${name}`);
  }

  /** The kernel forgot inode `ino`: nothing may be answered for that number any more. */
  forgotten(ino: number): void {
    if (this.session) this.addon.drop!(this.session, ino);
  }

  stats(): HeldStats | undefined {
    return this.session && this.addon.heldStats ? this.addon.heldStats(this.session) : undefined;
  }

  private async handDown(file: StatResult, chunks: Buffer[]): Promise<void> {
    const path = `${file.mount}/${file.path}`;
    const validMs = await this.meta.statValidMs(path, file.version);
    const node = this.inodes.find(path);
    // Only the inode of the very version fetched (each version of a path has its own).
    if (!this.session || !node || node.isDir || node.version !== file.version || validMs <= 0) return;
    const slash = path.lastIndexOf('/');
    const parent = this.inodes.find(path.slice(0, slash));
    // Opens answered by the addon tell this side nothing about the kernel's cached pages: the
    // next open answered here must not keep them.
    node.openedVersion = undefined;
    this.addon.hold!(this.session!, node.ino, this.options.fileMode, file.size, file.mtimeMs || this.options.defaultMtimeMs, this.options.attrTimeoutS, validMs, chunks,
      parent?.ino ?? 0, path.slice(slash + 1));
  }
}
