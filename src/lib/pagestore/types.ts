import type { Clock } from '../../core/clock.js';
import type { DiskSpace, StatDisk } from './capacity.js';
import type { Watermarks } from './lru.js';

export interface PageStoreOptions {
  dir: string;
  /** Configured capacity, bytes. */
  capacity: number;
  watermarks?: Watermarks;
  pageSize: number;
  /** False for pages that must stay (pinned): eviction skips them. */
  canEvict?: (key: string) => boolean;
  /** For intervals inside the process (the disk watch). */
  clock?: Clock;
  /**
   * For the pages' last reads, kept as their files' mtimes (readmarks.ts) and so compared with
   * times of other processes: the wall clock. Default: `clock` when one is given (tests), else wallClock.
   */
  wallClock?: Clock;
  /** Free space of the file system holding `dir` (tests give a fake). */
  statDisk?: StatDisk;
  /** How often free space is re-read (default 5 s). */
  diskCheckIntervalMs?: number;
  /** Idle page files kept open between kernel sends (default 256, at most a quarter of the fd limit). */
  keptSendFiles?: number;
  /**
   * The file system's block size: each page counts as its size rounded up to whole blocks, in
   * capacity and eviction. Read from statfs at open when not given (tests give 1 to count bytes).
   * Only then are the store's directories counted too (their blocks, as du counts them).
   */
  blockSize?: number;
  /**
   * How stale a page file's recorded last read (its mtime) may get before a read records it
   * again (default 5 minutes): the LRU order a restart rebuilds is that exact, and a page read
   * all the time costs a file time update per interval, not per read.
   */
  readMarkIntervalMs?: number;
  /** Writes a temp page file (tests inject ENOSPC and partial writes here). */
  writeFile?: (file: string, data: Buffer) => Promise<void>;
}

export interface StoredPage {
  key: string;
  /** Bytes of the page. */
  size: number;
  /** What it takes on disk: `size` rounded up to whole file-system blocks (what capacity counts). */
  footprint: number;
  crc: number;
  file: string;
  /**
   * The file's mtime as the store last set or saw it: when it was written or, within
   * readMarkIntervalMs, last read (see readmarks.ts). A restart rebuilds the LRU order from it.
   * Infinity while a mark is queued.
   */
  markedAt?: number;
  /**
   * The file's modification time when its bytes were last checked against `crc` (written by this
   * process from verified bytes, or read whole by openForSend); undefined until then (after a
   * restart). Sends by the kernel trust a file whose mtime and size are unchanged since; any
   * write to it makes it checked again. Readers still check the checksum end to end.
   */
  verifiedAt?: number;
}

/** A stored page opened for sending without reading it (see openForSend). */
export interface PageFile {
  fd: number;
  size: number;
  crc: number;
  close(): Promise<void>;
}

export interface VerifiedPage {
  data: Buffer;
  crc: number;
  /** Gives the buffer back to the pool once the caller has finished sending it. */
  release(): void;
}

/** Why a page was not stored: no room on the disk, no room in the store, or another I/O error. */
export type WriteFailureReason = 'disk_full' | 'no_room' | 'io_error';

export interface PageStoreEvents {
  onEvict?(count: number, bytes: number): void;
  onCorrupt?(key: string): void;
  /** Every failed page write, including one that succeeded when retried after eviction. */
  onWriteFailure?(reason: WriteFailureReason, error: Error): void;
  /** The effective capacity moved (the disk filled or emptied). */
  onCapacityChange?(effective: number, configured: number, disk: DiskSpace | undefined): void;
}
