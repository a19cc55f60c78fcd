import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FanoutError } from '../core/errors.js';

/** Request kinds the addon dispatches; numbers kept in step with `enum Op` in native/fuse/fuse.cc. */
export const OPS = {
  LOOKUP: 0,
  FORGET: 1,
  GETATTR: 2,
  OPEN: 3,
  READ: 4,
  RELEASE: 5,
  OPENDIR: 6,
  READDIR: 7,
  RELEASEDIR: 8,
  STATFS: 9,
  EXITED: 10,
  /** Not a kernel request: the read reply with token `a` has been copied to the kernel. */
  REPLIED: 12,
  READDIRPLUS: 13,
  /** Not a kernel request to answer: a held file (hold()) was opened by the addon itself. */
  OPENED_HELD: 14,
  /** Not a kernel request to answer: the addon looked up held file `ino` (name `a` in directory `b`): count the reference. */
  LOOKED_UP_HELD: 15,
  /** Not a kernel request: the addon answered a read of handle `a` at offset `b`, size `c` from offered pages, reaching a page not noted before. */
  SERVED: 16,
  /** Not a kernel request: withdrawn offered pages no FUSE thread writes from any more; `a` is the array of their offer ids. */
  RETURNED: 17,
  /** Not a kernel request: the caller of the request with interrupt id `a` got a signal (FUSE_INTERRUPT): answer it EINTR. */
  INTERRUPTED: 18,
} as const;

/** Reads the addon answered from offered pages (offer()), and what is offered now. */
export interface OfferedStats {
  served: number;
  servedBytes: number;
  /** Reads of registered handles whose pages were not (all) offered: answered by JS. */
  missed: number;
  offered: number;
  pages: number;
  bytes: number;
}

/** What the INIT reply asked the kernel for (native/fuse/init.h). */
export interface InitInfo {
  /** The INIT exchange has happened. */
  done: boolean;
  /** Pages per request asked for (the kernel grants at most fs.fuse.max_pages_limit); 0: libfuse's own. */
  maxPages: number;
  /** Direct I/O files may be mmapped (FUSE_DIRECT_IO_ALLOW_MMAP asked for and offered by the kernel). */
  directIoMmap: boolean;
  kernelFlags: number;
}

/** Requests the addon answered itself from held files, and what it holds. */
export interface HeldStats {
  lookup: number;
  getattr: number;
  open: number;
  read: number;
  release: number;
  /** Files handed down, and those dropped for the memory bound before they expired. */
  held: number;
  evicted: number;
  bytes: number;
}

/** A kernel request waiting for its answer (opaque; answer it exactly once). */
export type FuseRequest = { readonly __brand: 'FuseRequest' };
export type FuseSession = { readonly __brand: 'FuseSession' };

/**
 * dispatch(op, req, ino, ...args):
 * LOOKUP name · FORGET nlookup · OPEN flags · READ fh, offset, size · READDIR/READDIRPLUS fh, offset, size ·
 * the interrupt id of LOOKUP, GETATTR, OPEN, READ, OPENDIR and STATFS is the last argument, `d`
 * (0 or absent: not interruptible) ·
 * RELEASE/RELEASEDIR fh · EXITED status · REPLIED token · OPENED_HELD (nothing more) ·
 * LOOKED_UP_HELD name, parent ino · SERVED fh, offset, size · RETURNED offer ids · INTERRUPTED interrupt id
 * (req undefined for FORGET, EXITED, REPLIED, SERVED, RETURNED, INTERRUPTED and the *_HELD notes).
 */
export type Dispatch = (op: number, req: FuseRequest, ino: number, a?: number | string | number[], b?: number, c?: number, d?: number) => void;

export interface NativeMountOptions {
  /** libfuse arguments, e.g. ['-o', 'ro,max_read=1048576']. */
  args: string[];
  maxRead: number;
  maxReadahead: number;
  /** FUSE worker threads. */
  threads: number;
  /** One /dev/fuse descriptor per thread. */
  cloneFd: boolean;
  /** st_blksize of files: the read size cat, cp and friends choose. */
  blksize: number;
  /** Memory for held files (hold()), oldest dropped first beyond it. */
  heldBytes?: number;
  /** The cluster's page size: offered pages (offer()) are whole pages. */
  pageSize?: number;
  /** Pages per request asked for in INIT (0: libfuse's 256); the kernel grants at most fs.fuse.max_pages_limit. */
  maxPages?: number;
  /** Ask the kernel to allow mmap of direct I/O files (FUSE_DIRECT_IO_ALLOW_MMAP, kernel ≥ 6.6). */
  directIoMmap?: boolean;
}

/** The addon's functions (native/fuse/fuse.cc). Times in seconds, mtimes in ms. */
export interface FuseAddon {
  mount(mountpoint: string, options: NativeMountOptions, dispatch: Dispatch): FuseSession;
  unmount(session: FuseSession): void;
  replyError(req: FuseRequest, errno: number): void;
  replyEntry(req: FuseRequest, ino: number, mode: number, size: number, mtimeMs: number, attrTimeout: number, entryTimeout: number): void;
  replyAttr(req: FuseRequest, ino: number, mode: number, size: number, mtimeMs: number, attrTimeout: number): void;
  /** `directIo`: the kernel sends every read of this handle here, bypassing its page cache. */
  replyOpen(req: FuseRequest, fh: number, keepCache: boolean, directIo?: boolean): void;
  /**
   * A large read is sent by its FUSE thread, and a nonzero `token` is dispatched back (REPLIED)
   * once the kernel has the bytes; a small one (≤ 128 KiB) is sent at once and true returned.
   */
  replyData(req: FuseRequest, chunks: Buffer[], token?: number): boolean | void;
  replyDir(req: FuseRequest, size: number, offset: number, names: string[], inos: number[], modes: number[]): void;
  /** Entries from `offset` with attributes (size -1: name only) as fit in `size` bytes. */
  replyDirPlus(
    req: FuseRequest,
    size: number,
    offset: number,
    names: string[],
    inos: number[],
    modes: number[],
    sizes: number[],
    mtimesMs: number[],
    attrTimeout: number,
    entryTimeout: number,
  ): void;
  replyStatfs(req: FuseRequest, blockSize: number, blocks: number, blocksFree: number, files: number, nameMax: number): void;
  /**
   * Hands a small file's whole content down (copied): the addon answers lookup (of `name` in
   * directory `parentIno`, unless 0), getattr, open, read and release of inode `ino` itself for
   * `validMs`, telling JS of each lookup (LOOKED_UP_HELD) and open (OPENED_HELD).
   * Optional: an addon without it (older builds, test fakes) sends every request here.
   */
  hold?(session: FuseSession, ino: number, mode: number, size: number, mtimeMs: number, attrTimeout: number, validMs: number, chunks: Buffer[], parentIno?: number, name?: string): void;
  /** Nothing more is answered for `ino` from held files. */
  drop?(session: FuseSession, ino: number): void;
  heldStats?(session: FuseSession): HeldStats;
  /**
   * Offered pages (native/fuse/offered.h), optional like hold(): reads of handle `fh` (registered
   * before its open is answered) whose span lies in offered pages of `fileId` are answered by
   * the FUSE thread itself, in pages of `pageSize` (default: the mount option's). Called again
   * for an open handle, it moves the handle to another file id (and page size) in one step.
   */
  offerFile?(session: FuseSession, fh: number, fileId: number, size: number, pageSize?: number): void;
  /** offerFile() honours its `pageSize` (an older addon counts every handle in the mount option's). */
  readonly offersPageSizes?: boolean;
  /** Offers whole page `index` of `fileId`; the chunks must stay alive until withdrawn and free. False: offered already. */
  offer?(session: FuseSession, fileId: number, index: number, chunks: Buffer[], offerId: number): boolean;
  /** True: no FUSE thread writes from the page (reuse its memory now); false: RETURNED names its offer id later. */
  withdraw?(session: FuseSession, fileId: number, index: number): boolean;
  offeredStats?(session: FuseSession): OfferedStats;
  initInfo?(session: FuseSession): InitInfo;
}

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const ADDON_PATH = join(root, 'native/fuse/build/Release/fanout_fuse.node');

let addon: FuseAddon | undefined;

/** Loads the addon built by `npm run build:native`, or says how to get it. */
export function loadAddon(): FuseAddon {
  if (addon) return addon;
  if (!existsSync(ADDON_PATH)) {
    throw new FanoutError(
      'INTERNAL',
      `the FUSE addon is not built (${ADDON_PATH} is missing): install fuse3, libfuse3-dev, pkg-config, g++, make and python3 ` +
        '(as root: bash scripts/install-system-deps.sh runtime), then run `npm run build:native`',
    );
  }
  addon = createRequire(import.meta.url)(ADDON_PATH) as FuseAddon;
  return addon;
}
