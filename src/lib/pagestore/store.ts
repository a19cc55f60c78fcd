import { mkdir, open, readdir, rm, stat, unlink } from 'node:fs/promises';
import { close as closeCallback, fstat as fstatCallback, open as openCallback, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { crc32 } from '../checksum/index.js';
import { monotonicClock, wallClock, type Clock } from '../../core/clock.js';
import { FanoutError, outOfDescriptors } from '../../core/errors.js';
import { keptSendFilesFor, openFileLimit } from '../fdlimit/index.js';
import { BufferPool } from './bufferpool.js';
import { DEFAULT_BLOCK_SIZE, fileSystemBlockSize, onDisk, statDisk } from './capacity.js';
import { DiskRoom } from './diskroom.js';
import { LruIndex } from './lru.js';
import { PAGE_FILE_READ, StoreDirs, isNotAPageFile, readFully, scanPages } from './pagefiles.js';
import { PageWriter } from './pagewriter.js';
import { DEFAULT_READ_MARK_INTERVAL_MS, ReadMarks } from './readmarks.js';
import { SendFiles } from './sendfiles.js';
import type { PageSpool } from './spool.js';
import type { PageFile, PageStoreEvents, PageStoreOptions, StoredPage, VerifiedPage } from './types.js';

export type { PageFile, PageStoreEvents, PageStoreOptions, StoredPage, VerifiedPage, WriteFailureReason } from './types.js';

const DEFAULT_DISK_CHECK_MS = 5000;

const openFile = promisify(openCallback);
const fstatFile = promisify(fstatCallback);
const closeFile = promisify(closeCallback);

/**
 * Pages on local disk, one file each, named `<key>.<crc32>` so the checksum survives a restart
 * without a separate index: on start the directory is scanned and the LRU order rebuilt from
 * modification times, which reads keep up to date (readmarks.ts). This module owns the index,
 * reads (verified against the checksum), eviction and the disk watch; writing a page under its
 * name is PageWriter's (pagewriter.ts).
 *
 * Capacity counts what pages take on disk: each page's size rounded up to whole file-system
 * blocks (a store of 200-byte pages counted by their bytes held 20 times its capacity on disk).
 * The capacity eviction works from is the effective one (see capacity.ts): the configured
 * capacity, lowered to what the file system can hold. It is re-checked every
 * `diskCheckIntervalMs` on the write path and in `watchDisk`, and at once when a write finds
 * the disk full; such a write evicts and is retried once, then the page stays uncached.
 */
export class PageStore {
  private readonly index: LruIndex<StoredPage>;
  private readonly pagesDir: string;
  private readonly tmpDir: string;
  private readonly pool: BufferPool;
  private readonly clock: Clock;
  /** Read marks' clock: persisted in page files' mtimes (see PageStoreOptions.wallClock). */
  private readonly wall: Clock;
  private readonly diskCheckIntervalMs: number;
  /** Free space of the file system, and the effective capacity it allows. */
  private readonly room: DiskRoom;
  /** Puts pages on disk under their names (temp files, shards, the disk-full retry). */
  private readonly writer: PageWriter;
  /** The store's directories, each counted once in `used` (their blocks, as du counts them). */
  private readonly dirs: StoreDirs;
  /** Page files kept open between kernel sends of hot pages (openForSend). */
  private readonly sendFiles: SendFiles;
  /** Last reads waiting to be written to their page files' mtimes. */
  private readonly readMarks: ReadMarks;
  /** The file system's block size: what a page's footprint is rounded up to (read at open). */
  private blockSize: number;
  evictions = 0;
  corruptions = 0;

  constructor(
    private readonly options: PageStoreOptions,
    private readonly events: PageStoreEvents = {},
  ) {
    this.index = new LruIndex(options.capacity, options.watermarks ?? { high: 0.95, low: 0.85 });
    this.pagesDir = join(options.dir, 'pages');
    this.tmpDir = join(options.dir, 'tmp');
    // A few free buffers, not one per response slot: what bursts leave beyond them is garbage the
    // worker's reclaimer (lib/memory/reclaim.ts) gives back, instead of 64 MiB kept for good.
    this.pool = new BufferPool(options.pageSize, 4, 8 * 1024 * 1024);
    this.clock = options.clock ?? monotonicClock;
    this.wall = options.wallClock ?? options.clock ?? wallClock;
    // The hot pages of a few clients' windows, within the process's fd limit (fdlimit).
    this.sendFiles = new SendFiles(options.keptSendFiles ?? keptSendFilesFor(openFileLimit()));
    this.diskCheckIntervalMs = options.diskCheckIntervalMs ?? DEFAULT_DISK_CHECK_MS;
    this.blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.readMarks = new ReadMarks(options.readMarkIntervalMs ?? DEFAULT_READ_MARK_INTERVAL_MS, this.wall.now());
    this.room = new DiskRoom({
      dir: options.dir,
      configured: options.capacity,
      statDisk: options.statDisk ?? statDisk,
      clock: this.clock,
      intervalMs: this.diskCheckIntervalMs,
      index: this.index,
      onChange: (effective, configured, disk) => this.events.onCapacityChange?.(effective, configured, disk),
    });
    // A store told its block size (tests: 1, to count bytes) counts its pages only.
    this.dirs = new StoreDirs(options.blockSize === undefined ? (bytes) => this.index.addOverhead(bytes) : () => {});
    this.writer = new PageWriter({
      pagesDir: this.pagesDir,
      tmpDir: this.tmpDir,
      index: this.index,
      dirs: this.dirs,
      room: this.room,
      events,
      writeFile: options.writeFile,
      checkDisk: (check) => this.checkDisk(check),
      footprint: (bytes) => onDisk(bytes, this.blockSize),
      evictIfNeeded: (extra) => this.evictIfNeeded(extra),
    });
  }

  /** Page writes that failed, including ones that succeeded when retried after eviction. */
  get writeFailures(): number {
    return this.writer.writeFailures;
  }

  /** What the pages take on disk (their sizes in whole blocks) and the store's directories: what capacity counts. */
  get used(): number {
    return this.index.used;
  }

  /** Bytes of the pages themselves. */
  get pageBytes(): number {
    return this.index.bytes;
  }

  get pageCount(): number {
    return this.index.size;
  }

  /** The effective capacity: what eviction works from. */
  get capacity(): number {
    return this.index.capacity;
  }

  get configuredCapacity(): number {
    return this.options.capacity;
  }

  /** Free bytes on the store's file system at the last check (undefined before the first). */
  get diskFree(): number | undefined {
    return this.room.free;
  }

  /** Creates the directories, drops leftovers of interrupted writes, and reloads the index. */
  async open(): Promise<void> {
    // Emptied rather than recreated: on a full disk even a new directory may not fit.
    await mkdir(this.tmpDir, { recursive: true });
    for (const name of await readdir(this.tmpDir)) await rm(join(this.tmpDir, name), { recursive: true, force: true });
    await mkdir(this.pagesDir, { recursive: true });
    this.blockSize = this.options.blockSize ?? (await fileSystemBlockSize(this.pagesDir));
    await this.dirs.add(this.tmpDir);
    await this.dirs.add(this.pagesDir);
    for (const page of await scanPages(this.pagesDir, this.dirs)) this.index.add({ ...page, footprint: onDisk(page.size, this.blockSize) });
    await this.checkDisk();
    await this.evictIfNeeded(0);
  }

  /**
   * Re-reads free space every diskCheckIntervalMs until `signal` aborts, and evicts when other
   * writers filled the disk, so the store gives room back even while no page is written.
   */
  async watchDisk(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.clock.sleep(this.diskCheckIntervalMs, signal);
      } catch {
        return;
      }
      if (signal.aborted) return;
      await this.checkDisk({ forgetFull: true });
      await this.evictIfNeeded(0);
      await this.flushReadMarks();
    }
  }

  /** Writes the reads queued since the last flush to their page files (readmarks.ts): the disk watch's tick, and the worker's stop. */
  flushReadMarks(budgetMs?: number): Promise<void> {
    return this.readMarks.flush(this.wall.now(), (entry) => this.index.peek(entry.key) === entry, budgetMs);
  }

  /** Reads waiting for flushReadMarks, for tests. */
  get queuedReadMarks(): number {
    return this.readMarks.queued;
  }

  /**
   * Moves a page up in the LRU order: a read. One comparison more than the index's touch; a page
   * whose recorded last read is older than the interval is queued for flushReadMarks, once.
   */
  private touch(key: string): StoredPage | undefined {
    const entry = this.index.touch(key);
    if (entry !== undefined && (entry.markedAt ?? 0) < this.readMarks.staleBefore) this.readMarks.queue(entry);
    return entry;
  }

  /** Reads free space and sets the effective capacity (see DiskRoom.check). */
  async checkDisk(options: { forgetFull?: boolean } = {}): Promise<void> {
    await this.room.check(options);
  }

  has(key: string): boolean {
    return this.index.peek(key) !== undefined;
  }

  /**
   * Reads a page into a pooled buffer and verifies its checksum before anyone sees it. A page
   * that fails verification is deleted and reported as missing, so the caller refetches it.
   */
  async get(key: string): Promise<VerifiedPage | undefined> {
    let buffer: Buffer | undefined;
    const release = () => buffer && this.pool.release(buffer);
    try {
      const page = await this.readInto(key, (size) => (buffer = this.pool.acquire(size)));
      if (!page) release();
      return page && { data: page.data, crc: page.crc, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * A stored page read into memory the caller gives (`into(size)` returns a buffer of at least
   * `size` bytes, e.g. one with room for a frame head before the page), verified against its
   * checksum first; undefined if it is not stored (a corrupt page is dropped, as by get()).
   * Moves it up in the LRU order. On undefined or a throw the caller still owns what into() gave.
   */
  async readInto(key: string, into: (size: number) => Buffer): Promise<{ data: Buffer; crc: number } | undefined> {
    const entry = this.touch(key);
    if (!entry) return undefined;
    const data = into(entry.size).subarray(0, entry.size);
    try {
      const bytesRead = await readFully(entry.file, data, entry.size);
      if (bytesRead !== entry.size || crc32(data) !== entry.crc) {
        await this.dropCorrupt(entry);
        return undefined;
      }
      return { data, crc: entry.crc };
    } catch (err) {
      if (await this.lostPage(entry, err)) return undefined;
      throw outOfDescriptors(err, 'page store read') ?? new FanoutError('INTERNAL', `page store read failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Stores a complete, already verified page, making room first. A write that finds the disk
   * full re-reads free space, evicts and is retried once; if it still fails the page is not
   * stored (DISK_FULL) and the caller serves it uncached. No temp file outlives a failure.
   */
  put(key: string, data: Buffer, crc: number): Promise<void> {
    return this.writer.put(key, data, crc);
  }

  /**
   * Starts a page file written as its fill arrives (see spool.ts), after making room for the
   * whole page. Undefined when the store writes through an injected writeFile (tests of write
   * failures go through put()) or the temp file cannot be made: the caller then put()s the page.
   */
  spool(key: string, length: number): Promise<PageSpool | undefined> {
    return this.writer.spool(key, length);
  }

  /**
   * Puts a whole spool (every byte written, CRC computed as they arrived) under its key: a rename,
   * which the spool's open descriptor follows. The spool is settled here, whatever happens.
   */
  commitSpool(spool: PageSpool, crc: number): Promise<void> {
    return this.writer.commitSpool(spool, crc);
  }

  /**
   * Opens a page's file for a send that does not read it here (sendfile): its fd, length and
   * checksum. A page not checked since the restart, or whose file was written since it was
   * checked (mtime or size changed), is read and checked first (a corrupt one is dropped and
   * reported missing, as by get()). Otherwise a hit costs a stat, not a read: silent media
   * corruption is left to readers, who verify the checksum end to end. The file stays open for
   * the next sends of the page (sendfiles.ts); the caller's close() gives it back. An eviction
   * meanwhile unlinks the name, the open file stays readable until the send gives it back.
   */
  async openForSend(key: string): Promise<PageFile | undefined> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const entry = this.touch(key);
      if (!entry) return undefined;
      // A page sent before, whose name still leads to the same file, unwritten since it was
      // checked: its kept descriptor, for one stat. Synchronous on purpose: a stat of a page
      // file just sent (its inode and path cached) costs microseconds, the pool hand-off more.
      // Any failure of it (EIO, EACCES) only skips the kept file: the open below says what broke.
      const now = statQuietly(entry.file);
      if (now && entry.verifiedAt === now.mtimeMs && now.size === entry.size) {
        const kept = this.sendFiles.lend(key, now.ino);
        if (kept) return kept;
      }
      let fd;
      try {
        fd = await this.openPageFile(entry.file);
      } catch (err) {
        if (await this.lostPage(entry, err)) return undefined;
        throw outOfDescriptors(err, 'page store open') ?? new FanoutError('INTERNAL', `page store open failed: ${(err as NodeJS.ErrnoException).code ?? 'unknown error'}`, { cause: err });
      }
      const info = await fstatFile(fd).catch(() => undefined);
      if (info && entry.verifiedAt === info.mtimeMs && info.size === entry.size && this.index.peek(key) === entry) {
        return this.sendFiles.keep(key, fd, info.ino, entry.size, entry.crc);
      }
      await closeFile(fd);
      const page = await this.get(key);
      if (!page) return undefined;
      page.release();
      // The mtime seen before the read: a write during it shows as a change next time.
      if (info) entry.verifiedAt = info.mtimeMs;
    }
    return undefined; // written again while being checked: let the caller take the other path
  }

  /**
   * Opens a page file for a send. With no fd left (EMFILE, ENFILE), the idle page files kept for
   * later sends are closed first and the open tried once more: before, a warm read was refused
   * (OVERLOADED) while up to a quarter of the worker's fds sat in idle kept files.
   */
  private async openPageFile(file: string): Promise<number> {
    try {
      return await openFile(file, PAGE_FILE_READ);
    } catch (err) {
      if (!outOfDescriptors(err, '') || (await this.sendFiles.shed()) === 0) throw err;
      return await openFile(file, PAGE_FILE_READ);
    }
  }

  /** Takes a page out of the index, and out of the files kept open for sends. */
  private remove(key: string): StoredPage | undefined {
    this.sendFiles.forget(key);
    return this.index.remove(key);
  }

  /**
   * Reads a stored page whole and checks it against its checksum, without moving it in the LRU
   * order (the scrub, and a reader's report of a bad page). A page whose file no longer matches
   * is dropped (onCorrupt), so the next read refetches it. Never drops on anyone's word: only
   * on what this read finds.
   */
  async verify(key: string): Promise<'intact' | 'corrupt' | 'absent'> {
    const entry = this.index.peek(key);
    if (!entry) return 'absent';
    const buffer = this.pool.acquire(entry.size);
    try {
      const info = await stat(entry.file);
      const bytesRead = await readFully(entry.file, buffer, entry.size);
      if (info.size !== entry.size || bytesRead !== entry.size || crc32(buffer.subarray(0, entry.size)) !== entry.crc) {
        if (this.index.peek(key) !== entry) return 'absent'; // dropped or replaced meanwhile
        await this.dropCorrupt(entry);
        return 'corrupt';
      }
      entry.verifiedAt = info.mtimeMs;
      return 'intact';
    } catch (err) {
      const lost = await this.lostPage(entry, err);
      if (lost) return lost;
      throw new FanoutError('INTERNAL', `page store read failed: ${(err as NodeJS.ErrnoException).code ?? 'unknown error'}`, { cause: err });
    } finally {
      this.pool.release(buffer);
    }
  }

  /** Bytes of a stored page, without touching its LRU place; undefined if not stored. */
  sizeOf(key: string): number | undefined {
    return this.index.peek(key)?.size;
  }

  async delete(key: string): Promise<boolean> {
    const entry = this.remove(key);
    if (!entry) return false;
    await unlink(entry.file).catch(() => {});
    return true;
  }

  /** Lets go of the page files kept for sends (the worker stopping); a send still running keeps its own until it ends. */
  closeSendFiles(): void {
    this.sendFiles.forgetAll();
  }

  /** Page files open for sends now (kept or in a send), for tests. */
  get openSendFiles(): number {
    return this.sendFiles.size;
  }

  /** Location of a page's file, for tests and tools that inspect the store. */
  fileOf(key: string): string | undefined {
    return this.index.peek(key)?.file;
  }

  keys(): string[] {
    return [...this.index.keys()];
  }

  private async evictIfNeeded(extra: number): Promise<void> {
    const canEvict = this.options.canEvict;
    const victims = this.index.evict(extra, canEvict ? (entry) => canEvict(entry.key) : undefined);
    if (victims.length === 0) return;
    let bytes = 0;
    for (const victim of victims) {
      this.sendFiles.forget(victim.key);
      bytes += victim.footprint;
      await unlink(victim.file).catch(() => {});
    }
    this.evictions += victims.length;
    this.events.onEvict?.(victims.length, bytes);
  }

  /**
   * A read or open of `entry`'s file failed: a file gone (ENOENT) leaves the index ('absent'),
   * something else at its name (a directory, a symlink, a FIFO) is a corrupt page ('corrupt');
   * undefined for any other error, which stands.
   */
  private async lostPage(entry: StoredPage, err: unknown): Promise<'absent' | 'corrupt' | undefined> {
    const current = this.index.peek(entry.key) === entry;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      if (current) this.remove(entry.key);
      return 'absent';
    }
    if (!isNotAPageFile(err)) return undefined;
    if (!current) return 'absent'; // dropped or replaced meanwhile
    await this.dropCorrupt(entry);
    return 'corrupt';
  }

  private async dropCorrupt(entry: StoredPage): Promise<void> {
    this.remove(entry.key);
    this.corruptions++;
    this.events.onCorrupt?.(entry.key);
    // Recursive: whatever sits at the name (a directory too) goes, or no page could be stored there again.
    await rm(entry.file, { recursive: true, force: true }).catch(() => {});
  }
}

/** The stat of a page file, or undefined if it cannot be had (missing, or any error). */
function statQuietly(file: string): Stats | undefined {
  try {
    return statSync(file, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}
