import { constants } from 'node:fs';
import { constants as os } from 'node:os';
import type { ClusterStatus, FanoutClient, StatResult } from '../client/index.js';
import { monotonicClock, wallClock, type Clock } from '../core/clock.js';
import { FanoutError, isFanoutError } from '../core/errors.js';
import { errnoFor } from './errno.js';
import { DescriptorShortageLog } from './fdshortage.js';
import { TtlCache } from '../lib/ttlcache/index.js';
import { HeldFiles } from './held.js';
import { InodeTable, ROOT_INO, type Inode } from './inodes.js';
import { Metadata, type Attributes } from './metadata.js';
import { OPS, type Dispatch, type FuseAddon, type FuseRequest, type FuseSession, type HeldStats, type OfferedStats } from './native.js';
import { OfferedPages } from './offered.js';
import { DirectoryPrefetch } from './prefetch.js';
import { MountPages, type Lease } from './pages.js';
import { FileReader, type ReadResult } from './reader.js';
import { untilAborted } from './abort.js';
import { ReadRoom } from './readroom.js';
import { PageSizeFollower } from './pagesize.js';
import { ByteBudget } from '../lib/transfer/index.js';
import { containerShare } from '../lib/memory/container.js';

const { errno } = os;
const DIR_MODE = constants.S_IFDIR | 0o555;
const FILE_MODE = constants.S_IFREG | 0o444;
const STATFS_BLOCK = 4096;
/** Files up to this size fetched ahead are handed down whole to the addon (held.ts). */
const HELD_FILE_MAX = 1024 * 1024;
/** open(2) access mode bits (not in Node's fs.constants). */
const O_ACCMODE = 3;

export interface FsOptions {
  /** How long stat/list answers are reused here, and how long the kernel may cache attributes and names. */
  ttlMs: number;
  /** Pages fetched ahead of a sequential reader. */
  readahead: number;
  /** Files of a directory walked in order whose first page is fetched ahead (default 32; 0 off), within `filesAheadBytes` (default 8 MiB). */
  filesAhead?: number;
  filesAheadBytes?: number;
  /** Bytes of pages kept with no reader holding them (fetched ahead, or recently read; default 16 MiB). */
  cacheBytes?: number;
  /** Bytes of pages reads fetch themselves, held until their replies are sent; reads wait beyond it (default 256 MiB). */
  readBytes?: number;
  /** Bytes of pages readers' windows hold ahead of and behind their reads, over all open files (default 256 MiB). */
  aheadBytes?: number;
  /**
   * Files of at least one page are opened with direct I/O (default true): their reads skip the
   * kernel's page cache, one copy per byte fewer. Only where the kernel lets such files be
   * mmapped (FUSE_DIRECT_IO_ALLOW_MMAP, native/fuse/init.h); elsewhere the page cache is kept.
   */
  directIo?: boolean;
  clock?: Clock;
  log: MountLog;
}

/** Where the mount says why a request failed with EIO. */
export interface MountLog {
  warn(fields: object, message: string): void;
}

interface DirListing {
  names: string[];
  inos: number[];
  modes: number[];
  /** Mount paths of the entries ('' for "." and ".."). */
  paths: string[];
  /** Sizes for readdirplus; -1: attributes unknown, the name is sent alone. */
  sizes: number[];
  mtimes: number[];
  /** Files' versions (undefined for directories and unknown ones). */
  versions: (string | undefined)[];
}

/** Bytes one readdirplus entry takes in the reply (libfuse's fuse_add_direntry_plus: 152 + name, 8-aligned). */
export function direntPlusSize(name: string): number {
  return (152 + Buffer.byteLength(name) + 7) & ~7;
}

/**
 * Bytes of opened, unread files' first pages held at once (FileReader.start): 16 pages of 4 MiB,
 * or 1,024 small files of 64 KiB opened together (a loader's pool), each found arrived at its
 * first read; more opens fetch their first page into the shared pages.
 */
const START_BYTES = 64 * 1024 * 1024;
/**
 * Bytes of pages fetched ahead of reads, over all open files: one reader's whole window (8 pages
 * of 4 MiB by default) 8 times over. Past it readers fetch less ahead; the pages of each read
 * itself are always fetched.
 */
const AHEAD_BYTES = 256 * 1024 * 1024;
/**
 * Bytes of pages the reads themselves fetch, over all open files (ReaderAllowances.reads): 64
 * pages of 4 MiB, enough for every FUSE thread's read (32 by default, 1–2 pages each) at once.
 */
export const READ_BYTES = 256 * 1024 * 1024;
/** Bytes of pages kept with no reader holding them (FsOptions.cacheBytes). */
const CACHE_BYTES = 16 * 1024 * 1024;
/** Times a read refused for its page size is read again in the cluster's new one (readFollowing()). */
const FOLLOWS = 2;

/**
 * The filesystem behind the FUSE mount: a read-only view of every fanout mount, answered
 * through the SDK. The root lists the cluster's mounts (`/data`, …); files are mode 0444,
 * directories 0555. Missing paths are ENOENT; cluster failures EIO, with a log line saying why.
 */
export class FanoutFs {
  private readonly inodes = new InodeTable();
  private readonly meta: Metadata;
  private readonly files = new Map<number, FileReader>();
  private readonly dirs = new Map<number, DirListing>();
  private readonly status: TtlCache<ClusterStatus>;
  private readonly prefetch: DirectoryPrefetch;
  /** The pages of the page size the mount counts in now (a new set when it follows another: rebuild()). */
  private pages: MountPages;
  private readonly pageSizes: PageSizeFollower;
  private readonly held: HeldFiles;
  private readonly offered: OfferedPages;
  /** What all readers may hold: first pages of files not read yet, pages fetched ahead, and pages reads fetch themselves. */
  private readonly allowances: { starts: ByteBudget; ahead: ByteBudget; reads: ReadRoom };
  private session: FuseSession | undefined;
  /** Requests in progress the kernel may interrupt, by interrupt id (OPS.INTERRUPTED aborts them). */
  private readonly interruptible = new Map<number, AbortController>();
  /** Read replies the kernel has not copied yet, by reply token (OPS.REPLIED ends them). */
  private readonly replies = new Map<number, ReadResult>();
  private nextToken = 1;
  private readonly ttlSeconds: number;
  private readonly startedAt: number;
  private nextHandle = 1;
  private readonly shortage: DescriptorShortageLog;
  private exited: ((status: number) => void) | undefined;
  /** Resolves with the loop's status when the FUSE session ends (unmounted, from here or outside). */
  readonly closed = new Promise<number>((resolve) => (this.exited = resolve));

  constructor(
    private readonly addon: FuseAddon,
    private readonly client: FanoutClient,
    pageSize: number,
    private readonly options: FsOptions,
  ) {
    const clock = options.clock ?? monotonicClock;
    this.pageSizes = new PageSizeFollower(pageSize, {
      clusterPageSize: async (fresh) => (await client.cluster(fresh)).pageSize,
      rebuild: (_from, to) => this.rebuild(to),
      warn: (fields, message) => options.log.warn(fields, message),
    });
    this.meta = new Metadata(client, options.ttlMs, clock);
    this.shortage = new DescriptorShortageLog(options.log, clock);
    this.status = new TtlCache(10_000, clock);
    this.ttlSeconds = options.ttlMs / 1000;
    // An mtime shown to users, so wall time.
    this.startedAt = (options.clock ?? wallClock).now();
    this.pages = new MountPages(client.pageReader(pageSize), pageSize, options.cacheBytes ?? CACHE_BYTES);
    // In a container each takes at most an eighth of its memory limit (lib/memory/container.ts):
    // at their fixed sizes, 64 readers took a mount in a 256 MiB cgroup to its OOM kill.
    this.allowances = {
      starts: new ByteBudget(containerShare(START_BYTES)),
      ahead: new ByteBudget(containerShare(options.aheadBytes ?? AHEAD_BYTES)),
      reads: new ReadRoom(containerShare(options.readBytes ?? READ_BYTES)),
    };
    this.held = new HeldFiles(addon, this.pages, this.inodes, this.meta, {
      attrTimeoutS: this.ttlSeconds,
      maxFileBytes: HELD_FILE_MAX,
      fileMode: FILE_MODE,
      defaultMtimeMs: this.startedAt,
    });
    this.offered = new OfferedPages(addon, pageSize);
    this.prefetch = new DirectoryPrefetch(
      { list: (path) => this.meta.list(path), stat: (path) => this.meta.stat(path), prefetchPage: (file, index) => this.held.prefetch(file, index) },
      { files: options.filesAhead ?? 32, bytes: options.filesAheadBytes ?? 8 * 1024 * 1024, pageSize },
    );
  }

  /** The FUSE session, once mounted: from then on small files fetched ahead are handed down to the addon (held.ts). */
  attach(session: FuseSession): void {
    this.session = session;
    this.held.attach(session);
    this.offered.attach(session);
  }

  /** The page size the mount counts in: the cluster's when mounted, or the one it changed to since (pagesize.ts). */
  get pageSize(): number {
    return this.pageSizes.pageSize;
  }

  /** Reads the addon answered from offered pages (undefined before attach, or without the addon's support). */
  offeredStats(): OfferedStats | undefined {
    return this.offered.stats();
  }

  /** Whether files of at least a page are opened with direct I/O (known once the kernel's INIT is answered). */
  directIo(): boolean {
    if (this.options.directIo === false || !this.session) return false;
    return this.addon.initInfo?.(this.session).directIoMmap === true;
  }

  /** Requests the addon answered from held files (undefined before attach). */
  heldStats(): HeldStats | undefined {
    return this.held.stats();
  }

  /** Every kernel request enters here (on the main thread, via the addon's thread-safe function). */
  readonly dispatch: Dispatch = (op, req, ino, a, b, c, d) => {
    switch (op) {
      case OPS.LOOKUP:
        return this.answer(req, 'lookup', ino, d, (signal) => this.lookup(req, ino, a as string, signal));
      case OPS.FORGET:
        if (this.inodes.forget(ino, a as number)) this.held.forgotten(ino);
        return;
      case OPS.LOOKED_UP_HELD:
        return this.held.lookedUp(ino, b!, a as string);
      case OPS.OPENED_HELD: {
        const node = this.inodes.get(ino);
        if (node) void this.prefetch.opened(node.path); // the walk goes on; the open itself is answered
        return;
      }
      case OPS.GETATTR:
        return this.answer(req, 'getattr', ino, d, (signal) => this.getattr(req, ino, signal));
      case OPS.OPEN:
        return this.answer(req, 'open', ino, d, (signal) => this.open(req, ino, a as number, signal));
      case OPS.READ:
        return this.answer(req, 'read', ino, d, (signal) => this.read(req, a as number, b!, c!, signal));
      case OPS.INTERRUPTED:
        return this.interruptible.get(a as number)?.abort(new FanoutError('ABORTED', 'the request was interrupted: its caller got a signal'));
      case OPS.RELEASE: {
        const reader = this.files.get(a as number);
        this.files.delete(a as number);
        if (reader) {
          reader.close();
          this.offered.close(reader.file, reader.pageSize);
        }
        return this.addon.replyError(req, 0);
      }
      case OPS.SERVED:
        return this.files.get(a as number)?.served(b!, c!);
      case OPS.RETURNED:
        return this.offered.returned(a as number[]);
      case OPS.OPENDIR:
        return this.answer(req, 'opendir', ino, d, (signal) => this.opendir(req, ino, signal));
      case OPS.READDIR:
        return this.answer(req, 'readdir', ino, d, () => this.readdir(req, a as number, b!, c!));
      case OPS.READDIRPLUS:
        return this.answer(req, 'readdir', ino, d, () => this.readdirplus(req, a as number, b!, c!));
      case OPS.REPLIED:
        return this.replied(a as number);
      case OPS.RELEASEDIR:
        this.dirs.delete(a as number);
        return this.addon.replyError(req, 0);
      case OPS.STATFS:
        return this.answer(req, 'statfs', ino, d, (signal) => this.statfs(req, signal));
      case OPS.EXITED:
        return this.exited?.(a as number);
      default:
        if (req) this.addon.replyError(req, errno.ENOSYS);
    }
  };

  private async lookup(req: FuseRequest, parentIno: number, name: string, signal?: AbortSignal): Promise<void> {
    const parent = this.node(parentIno);
    // Nothing is remembered for an interrupted lookup: the kernel takes no reference to forget.
    const attrs = await untilAborted(this.meta.lookup(parent.path, name), signal);
    if (!attrs) {
      // A negative entry: the kernel remembers the name is missing for the TTL.
      return this.addon.replyEntry(req, 0, 0, 0, 0, 0, this.ttlSeconds);
    }
    const node = this.inodes.remember(parent.path === '' ? name : `${parent.path}/${name}`, attrs.isDir, attrs.version, attrs);
    const { mode, size, mtimeMs } = this.stat(attrs);
    this.addon.replyEntry(req, node.ino, mode, size, mtimeMs, this.ttlSeconds, this.ttlSeconds);
  }

  private async getattr(req: FuseRequest, ino: number, signal?: AbortSignal): Promise<void> {
    const node = this.node(ino);
    const current = node.isDir ? { isDir: true, size: 0, mtimeMs: 0 } : await untilAborted(this.meta.attributes(node.path), signal);
    // An inode whose path has moved on (or gone) stands for the version its readers opened: its own size and mtime.
    const own = node.version !== undefined && node.size !== undefined && current?.version !== node.version ? { isDir: false, size: node.size, mtimeMs: node.mtimeMs ?? 0 } : undefined;
    const attrs = own ?? current;
    if (!attrs) throw new FanoutError('NOT_FOUND', `/${node.path} is gone`);
    const { mode, size, mtimeMs } = this.stat(attrs);
    this.addon.replyAttr(req, ino, mode, size, mtimeMs, this.ttlSeconds);
  }

  private async open(req: FuseRequest, ino: number, flags: number, signal?: AbortSignal): Promise<void> {
    const node = this.node(ino);
    if ((flags & O_ACCMODE) !== constants.O_RDONLY || flags & constants.O_TRUNC) return this.addon.replyError(req, errno.EROFS);
    if (node.isDir) return this.addon.replyError(req, errno.EISDIR);
    // An interrupted open registers no handle and starts no fetch (the kernel has no file to release).
    const file = await untilAborted(this.meta.stat(node.path), signal);
    if (node.version === undefined) node.version = file.version;
    // The path is at another version than this inode's: ESTALE makes the kernel look the name up
    // again (open(2) retries a stale open once, revalidating) and open the new version's inode.
    else if (node.version !== file.version) return this.addon.replyError(req, errno.ESTALE);
    // The kernel's cached pages of this file are still right if it is still at the same version.
    const keepCache = node.openedVersion === file.version;
    node.openedVersion = file.version;
    const fh = this.nextHandle++;
    // Registered before the open is answered: the first read may already find its page offered.
    const reader = this.fileReader(fh, file);
    // The first read follows at once: its page is on the way before the kernel asks.
    if (!keepCache) reader.start();
    this.files.set(fh, reader);
    // Small files keep the page cache: they are read whole, often again (held.ts serves most).
    const direct = file.size >= this.pageSize && this.directIo();
    this.addon.replyOpen(req, fh, keepCache, direct);
    void this.prefetch.opened(node.path);
  }

  /**
   * `signal`: the kernel interrupted the read (its reader got a signal): it stops waiting and is
   * answered EINTR (answer()), so the reader's Ctrl-C (or kill) takes effect now, not once its
   * pages arrived or their deadline passed.
   */
  private async read(req: FuseRequest, fh: number, offset: number, size: number, signal?: AbortSignal): Promise<void> {
    const reader = this.files.get(fh);
    if (!reader) return this.addon.replyError(req, errno.EBADF);
    const result = await this.readFollowing(fh, reader, offset, size, signal);
    const token = this.nextToken++;
    this.replies.set(token, result);
    try {
      if (this.addon.replyData(req, result.chunks, token) === true) this.replied(token); // sent already
    } catch (err) {
      this.replied(token);
      throw err;
    }
  }

  /**
   * The read, by handle `fh`'s reader; one refused for its page size after the cluster changed its
   * pageSize is read again by the reader rebuild() gave the handle in the new size (at most
   * FOLLOWS times: a cluster that keeps changing fails the read rather than loop). Before, every
   * page the mount did not hold failed EIO with a log line saying to remount, until someone did.
   */
  private async readFollowing(fh: number, reader: FileReader, offset: number, size: number, signal?: AbortSignal): Promise<ReadResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await reader.read(offset, size, signal);
      } catch (err) {
        if (attempt > FOLLOWS || signal?.aborted) throw err;
        await this.pageSizes.refused(err, reader.pageSize);
        const next = this.files.get(fh);
        if (!next || next === reader) throw err;
        reader = next;
      }
    }
  }

  /** Handle `fh`'s reader of `file`, in the page size the mount counts in now; its pages are offered under that size. */
  private fileReader(fh: number, file: StatResult): FileReader {
    const { pageSize } = this.pages;
    const fileId = this.offered.open(fh, file, pageSize);
    const offer = fileId === undefined ? undefined : (index: number, lease: Lease) => this.offered.hold(fileId, index, lease);
    return new FileReader(file, this.pages, pageSize, this.options.readahead, offer, this.allowances);
  }

  /**
   * The mount counts pages of `to` bytes from now on (pagesize.ts): a new set of pages fetched in
   * that size, and every open handle moved to a reader of it (its reads address bytes, so the
   * application sees nothing). The addon's handle moves to the new size's file id before the old
   * window's offers are withdrawn. The old pages go back to the slabs as their last holder lets go
   * (a read in flight keeps its own until replied). Old and new pages never share a set, a reader
   * or an offered file id, so no read is put together from pages of two sizes. Held small files
   * and the kernel's page cache are whole-file bytes and stay.
   */
  private rebuild(to: number): void {
    const old = this.pages;
    this.pages = new MountPages(this.client.pageReader(to), to, this.options.cacheBytes ?? CACHE_BYTES);
    this.held.follow(this.pages);
    this.prefetch.follow(to);
    for (const [fh, reader] of this.files) {
      this.files.set(fh, this.fileReader(fh, reader.file));
      reader.close();
      this.offered.close(reader.file, reader.pageSize);
    }
    old.retire();
  }

  /** The kernel has the bytes of a read reply: its pages may be reused. */
  private replied(token: number): void {
    const result = this.replies.get(token);
    if (!result) return;
    this.replies.delete(token);
    for (const lease of result.leases) lease.release();
    result.room?.();
  }

  /** Bytes of pages held by reads that fetched them and not yet sent (the `reads` allowance in use). */
  readBytesInUse(): number {
    return this.allowances.reads.inUse;
  }

  private async opendir(req: FuseRequest, ino: number, signal?: AbortSignal): Promise<void> {
    const node = this.node(ino);
    if (!node.isDir) return this.addon.replyError(req, errno.ENOTDIR);
    const entries = await untilAborted(this.meta.list(node.path), signal);
    const listing: DirListing = { names: ['.', '..'], inos: [ino, ino], modes: [DIR_MODE, DIR_MODE], paths: ['', ''], sizes: [-1, -1], mtimes: [0, 0], versions: [undefined, undefined] };
    for (const entry of entries) {
      const path = node.path === '' ? entry.name : `${node.path}/${entry.name}`;
      const isDir = entry.type === 'dir';
      listing.names.push(entry.name);
      listing.paths.push(path);
      const version = isDir ? undefined : entry.version;
      listing.versions.push(version);
      listing.inos.push(this.inodes.numberFor(path, version));
      listing.modes.push(isDir ? DIR_MODE : FILE_MODE);
      // A file's attributes must be what stat says (the listing seeded the stat cache with them).
      const known = isDir || (entry.size !== undefined && entry.mtimeMs !== undefined && entry.version !== undefined);
      listing.sizes.push(!known ? -1 : isDir ? 0 : entry.size!);
      listing.mtimes.push(entry.mtimeMs || this.startedAt);
    }
    const fh = this.nextHandle++;
    this.dirs.set(fh, listing);
    this.addon.replyOpen(req, fh, false);
  }

  private async readdir(req: FuseRequest, fh: number, offset: number, size: number): Promise<void> {
    const listing = this.dirs.get(fh);
    if (!listing) return this.addon.replyError(req, errno.EBADF);
    this.addon.replyDir(req, size, offset, listing.names, listing.inos, listing.modes);
  }

  /**
   * Entries with their attributes: the kernel caches each as looked up, so opening the files of
   * a listed directory costs no lookup round trip each. Every entry sent with attributes is a
   * kernel reference (forgotten later like a lookup's), so exactly the entries that fit are
   * counted here, then sent.
   */
  private async readdirplus(req: FuseRequest, fh: number, offset: number, size: number): Promise<void> {
    const listing = this.dirs.get(fh);
    if (!listing) return this.addon.replyError(req, errno.EBADF);
    let used = 0;
    let end = offset;
    for (; end < listing.names.length; end++) {
      const need = direntPlusSize(listing.names[end]!);
      if (used + need > size) break;
      used += need;
    }
    for (let i = Math.max(offset, 2); i < end; i++) {
      if (listing.sizes[i]! < 0) continue;
      const attrs = { size: listing.sizes[i]!, mtimeMs: listing.mtimes[i]! };
      listing.inos[i] = this.inodes.remember(listing.paths[i]!, listing.modes[i] === DIR_MODE, listing.versions[i], attrs).ino;
    }
    const { names, inos, modes, sizes, mtimes } = listing;
    this.addon.replyDirPlus(req, used, offset, names, inos, modes, sizes, mtimes, this.ttlSeconds, this.ttlSeconds);
  }

  /** df: the cluster's capacity and free cache space. */
  private async statfs(req: FuseRequest, signal?: AbortSignal): Promise<void> {
    const { totals } = await untilAborted(this.status.get('cluster', () => this.client.status()), signal);
    const blocks = Math.floor(totals.capacity / STATFS_BLOCK);
    const free = Math.max(0, Math.floor((totals.capacity - totals.used) / STATFS_BLOCK));
    // No inode count: the mount has no fixed number of them, and the inodes the kernel holds
    // reported as all used (none free) showed `df -i` at 100 % and fired free-inode alerts.
    this.addon.replyStatfs(req, STATFS_BLOCK, blocks, free, 0, 255);
  }

  private node(ino: number): Inode {
    const node = this.inodes.get(ino);
    if (!node) throw new FanoutError('NOT_FOUND', `inode ${ino} is not known (forgotten)`);
    return node;
  }

  private stat(attrs: Attributes): { mode: number; size: number; mtimeMs: number } {
    return { mode: attrs.isDir ? DIR_MODE : FILE_MODE, size: attrs.size, mtimeMs: attrs.mtimeMs || this.startedAt };
  }

  /**
   * Runs one request's handler; any error becomes its errno (EIO with a log line for cluster
   * failures). `interruptId` (nonzero): the addon tells of the kernel's FUSE_INTERRUPT for the
   * request (OPS.INTERRUPTED), which aborts the handler's signal; the handler stops waiting and
   * the request is answered EINTR. Before, a `stat` or `ls` with a stopped worker stayed in D state
   * until the request's deadline, Ctrl-C or not.
   */
  private answer(req: FuseRequest, op: string, ino: number, interruptId: number | undefined, handler: (signal?: AbortSignal) => Promise<void>): void {
    const interrupt = interruptId ? new AbortController() : undefined;
    if (interrupt) this.interruptible.set(interruptId!, interrupt);
    const handled = handler(interrupt?.signal).finally(() => {
      if (interrupt) this.interruptible.delete(interruptId!);
    });
    handled.catch((err: unknown) => {
      if (interrupt?.signal.aborted) {
        try {
          return this.addon.replyError(req, errno.EINTR);
        } catch {
          return; // answered before the interrupt came
        }
      }
      const node = this.inodes.get(ino);
      if (node && isFanoutError(err, 'SOURCE_CHANGED')) this.meta.forget(node.path);
      const code = errnoFor(err);
      const pathOf = () => `/${this.inodes.get(ino)?.path ?? `<inode ${ino}>`}`;
      if (code === errno.EMFILE || code === errno.ENFILE) {
        this.shortage.note(code === errno.EMFILE ? 'EMFILE' : 'ENFILE', op, pathOf());
      } else if (code === errno.EIO) {
        const error = err as Partial<FanoutError>;
        const path = pathOf();
        this.options.log.warn({ op, path, code: error.code ?? 'INTERNAL', err: error.message ?? String(err) }, `${op} ${path} failed: EIO`);
      }
      try {
        this.addon.replyError(req, code);
      } catch {
        // already answered (the failure came after the reply): nothing more to tell the kernel
      }
    });
  }
}
