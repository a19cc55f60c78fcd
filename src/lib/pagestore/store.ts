import { mkdir, open, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from '../checksum/index.js';
import { systemClock, type Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';
import { isDiskFull } from '../statefile/index.js';
import { BufferPool } from './bufferpool.js';
import { effectiveCapacity, statDisk, type DiskSpace, type StatDisk } from './capacity.js';
import { LruIndex, type Watermarks } from './lru.js';

/**
 * Pages on local disk, one file each, named `<key>.<crc32>` so the checksum survives a restart
 * without a separate index: on start the directory is scanned and the LRU order rebuilt from
 * modification times. Writes go to tmp/ and are renamed into place, so a crash or a failed
 * source read never leaves a partial page under a real name.
 *
 * The capacity eviction works from is the effective one (see capacity.ts): the configured
 * capacity, lowered to what the file system can hold. It is re-checked every
 * `diskCheckIntervalMs` on the write path and in `watchDisk`, and at once when a write finds
 * the disk full; such a write evicts and is retried once, then the page stays uncached.
 */
export interface PageStoreOptions {
  dir: string;
  /** Configured capacity, bytes. */
  capacity: number;
  watermarks?: Watermarks;
  pageSize: number;
  /** False for pages that must stay (pinned): eviction skips them. */
  canEvict?: (key: string) => boolean;
  clock?: Clock;
  /** Free space of the file system holding `dir` (tests give a fake). */
  statDisk?: StatDisk;
  /** How often free space is re-read (default 5 s). */
  diskCheckIntervalMs?: number;
  /** Writes a temp page file (tests inject ENOSPC and partial writes here). */
  writeFile?: (file: string, data: Buffer) => Promise<void>;
}

interface StoredPage {
  key: string;
  size: number;
  crc: number;
  file: string;
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

const PAGE_FILE = /^([0-9a-f]{16,128})\.([0-9a-f]{8})$/;
const DEFAULT_DISK_CHECK_MS = 5000;

export class PageStore {
  private readonly index: LruIndex<StoredPage>;
  private readonly pagesDir: string;
  private readonly tmpDir: string;
  private readonly pool: BufferPool;
  private readonly clock: Clock;
  private readonly statDisk: StatDisk;
  private readonly diskCheckIntervalMs: number;
  private tmpCounter = 0;
  private lastDiskCheck = -Infinity;
  private disk: DiskSpace | undefined;
  /** What the store held when a write last found the disk full (quota limits statfs cannot see). */
  private fullAt = Infinity;
  /** Bytes of pages being written: room is made for them before they land in the index. */
  private writing = 0;
  evictions = 0;
  corruptions = 0;
  writeFailures = 0;

  constructor(
    private readonly options: PageStoreOptions,
    private readonly events: PageStoreEvents = {},
  ) {
    this.index = new LruIndex(options.capacity, options.watermarks ?? { high: 0.95, low: 0.85 });
    this.pagesDir = join(options.dir, 'pages');
    this.tmpDir = join(options.dir, 'tmp');
    // A few free buffers, not one per response slot: what bursts leave beyond them is garbage the
    // worker's reclaimer (worker/memory.ts) gives back, instead of 64 MiB kept for good.
    this.pool = new BufferPool(options.pageSize, 4);
    this.clock = options.clock ?? systemClock;
    this.statDisk = options.statDisk ?? statDisk;
    this.diskCheckIntervalMs = options.diskCheckIntervalMs ?? DEFAULT_DISK_CHECK_MS;
  }

  get used(): number {
    return this.index.used;
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
    return this.disk?.free;
  }

  /** Creates the directories, drops leftovers of interrupted writes, and reloads the index. */
  async open(): Promise<void> {
    // Emptied rather than recreated: on a full disk even a new directory may not fit.
    await mkdir(this.tmpDir, { recursive: true });
    for (const name of await readdir(this.tmpDir)) await rm(join(this.tmpDir, name), { recursive: true, force: true });
    await mkdir(this.pagesDir, { recursive: true });
    const found: (StoredPage & { mtimeMs: number })[] = [];
    for (const shard of await readdir(this.pagesDir)) {
      const shardDir = join(this.pagesDir, shard);
      for (const name of await readdir(shardDir).catch(() => [] as string[])) {
        const match = PAGE_FILE.exec(name);
        const file = join(shardDir, name);
        if (!match) continue;
        const info = await stat(file).catch(() => undefined);
        if (!info?.isFile()) continue;
        found.push({ key: match[1]!, crc: parseInt(match[2]!, 16), size: info.size, file, mtimeMs: info.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const { mtimeMs: _mtime, ...page } of found) this.index.add(page);
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
    }
  }

  /**
   * Reads free space and sets the effective capacity. If statfs fails the last figure stays:
   * a write that then finds the disk full still lowers the capacity through `fullAt`, which
   * periodic checks forget (space may have been freed, or a quota raised).
   */
  async checkDisk(options: { forgetFull?: boolean } = {}): Promise<void> {
    this.lastDiskCheck = this.clock.now();
    if (options.forgetFull) this.fullAt = Infinity;
    try {
      this.disk = await this.statDisk(this.options.dir);
    } catch {
      // keep the last figure; without one, the configured capacity (bounded by fullAt) holds
    }
    const fits = this.disk ? effectiveCapacity(this.options.capacity, this.index.used, this.disk) : this.options.capacity;
    const effective = Math.max(0, Math.min(fits, this.fullAt));
    if (effective !== this.index.capacity) {
      this.index.capacity = effective;
      this.events.onCapacityChange?.(effective, this.options.capacity, this.disk);
    }
  }

  has(key: string): boolean {
    return this.index.peek(key) !== undefined;
  }

  /**
   * Reads a page into a pooled buffer and verifies its checksum before anyone sees it. A page
   * that fails verification is deleted and reported as missing, so the caller refetches it.
   */
  async get(key: string): Promise<VerifiedPage | undefined> {
    const entry = this.index.touch(key);
    if (!entry) return undefined;
    const buffer = this.pool.acquire(entry.size);
    let release = () => this.pool.release(buffer);
    try {
      const bytesRead = await readFully(entry.file, buffer, entry.size);
      const data = buffer.subarray(0, entry.size);
      if (bytesRead !== entry.size || crc32(data) !== entry.crc) {
        release();
        await this.dropCorrupt(entry);
        return undefined;
      }
      return { data, crc: entry.crc, release };
    } catch (err) {
      release();
      release = () => {};
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.index.remove(key);
        return undefined;
      }
      throw new FanoutError('INTERNAL', `page store read failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Stores a complete, already verified page, making room first. A write that finds the disk
   * full re-reads free space, evicts and is retried once; if it still fails the page is not
   * stored (DISK_FULL) and the caller serves it uncached. No temp file outlives a failure.
   */
  async put(key: string, data: Buffer, crc: number): Promise<void> {
    if (this.index.peek(key)) return;
    if (this.clock.now() - this.lastDiskCheck >= this.diskCheckIntervalMs) await this.checkDisk({ forgetFull: true });
    if (data.length > this.index.capacity) {
      const error = new FanoutError('STORE_FULL', `page of ${data.length} bytes exceeds the page store's effective capacity (${this.index.capacity} bytes)`);
      this.noteWriteFailure('no_room', error);
      throw error;
    }
    const name = `${key}.${crc.toString(16).padStart(8, '0')}`;
    const shardDir = join(this.pagesDir, key.slice(0, 2));
    const file = join(shardDir, name);
    this.writing += data.length;
    try {
      await this.evictIfNeeded(this.writing);
      try {
        await this.writePage(shardDir, file, key, data);
      } catch (err) {
        if (!isDiskFull(err)) throw this.writeError('io_error', err);
        this.noteWriteFailure('disk_full', err as Error);
        // The disk holds less than the store thought: never plan for more than is held now.
        this.fullAt = this.index.used;
        await this.checkDisk();
        await this.evictIfNeeded(this.writing);
        try {
          await this.writePage(shardDir, file, key, data);
        } catch (retryErr) {
          throw this.writeError(isDiskFull(retryErr) ? 'disk_full' : 'io_error', retryErr);
        }
      }
    } finally {
      this.writing -= data.length;
    }
    const written = await stat(file).catch(() => undefined);
    this.index.add({ key, size: data.length, crc, file, verifiedAt: written?.mtimeMs });
  }

  /**
   * Opens a page's file for a send that does not read it here (sendfile): its fd, length and
   * checksum. A page not checked since the restart, or whose file was written since it was
   * checked (mtime or size changed), is read and checked first (a corrupt one is dropped and
   * reported missing, as by get()). Otherwise a hit costs an fstat, not a read: silent media
   * corruption is left to readers, who verify the checksum end to end. The caller closes it; an
   * eviction meanwhile unlinks the name, the open file stays readable.
   */
  async openForSend(key: string): Promise<PageFile | undefined> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const entry = this.index.touch(key);
      if (!entry) return undefined;
      let handle;
      try {
        handle = await open(entry.file, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          if (this.index.peek(key) === entry) this.index.remove(key);
          return undefined;
        }
        throw new FanoutError('INTERNAL', `page store open failed: ${(err as NodeJS.ErrnoException).code ?? 'unknown error'}`, { cause: err });
      }
      const info = await handle.stat().catch(() => undefined);
      if (info && entry.verifiedAt === info.mtimeMs && info.size === entry.size) {
        const file = handle;
        return { fd: file.fd, size: entry.size, crc: entry.crc, close: () => file.close() };
      }
      await handle.close();
      const page = await this.get(key);
      if (!page) return undefined;
      page.release();
      // The mtime seen before the read: a write during it shows as a change next time.
      if (info) entry.verifiedAt = info.mtimeMs;
    }
    return undefined; // written again while being checked: let the caller take the other path
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
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        if (this.index.peek(key) === entry) this.index.remove(key);
        return 'absent';
      }
      throw new FanoutError('INTERNAL', `page store read failed: ${(err as NodeJS.ErrnoException).code ?? 'unknown error'}`, { cause: err });
    } finally {
      this.pool.release(buffer);
    }
  }

  /** Bytes of a stored page, without touching its LRU place; undefined if not stored. */
  sizeOf(key: string): number | undefined {
    return this.index.peek(key)?.size;
  }

  private async writePage(shardDir: string, file: string, key: string, data: Buffer): Promise<void> {
    const tmp = join(this.tmpDir, `${key}.${process.pid}.${this.tmpCounter++}`);
    try {
      await mkdir(shardDir, { recursive: true });
      await (this.options.writeFile ?? writeFile)(tmp, data);
      await rename(tmp, file);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }

  private noteWriteFailure(reason: WriteFailureReason, error: Error): void {
    this.writeFailures++;
    this.events.onWriteFailure?.(reason, error);
  }

  private writeError(reason: WriteFailureReason, err: unknown): FanoutError {
    this.noteWriteFailure(reason, err as Error);
    // The errno code, not the message: messages carry server paths, and these can reach clients.
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    if (reason === 'disk_full') return new FanoutError('DISK_FULL', `the page store's disk is full (${code}): page not stored`, { cause: err });
    return new FanoutError('INTERNAL', `page store write failed (${code})`, { cause: err });
  }

  async delete(key: string): Promise<boolean> {
    const entry = this.index.remove(key);
    if (!entry) return false;
    await unlink(entry.file).catch(() => {});
    return true;
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
      bytes += victim.size;
      await unlink(victim.file).catch(() => {});
    }
    this.evictions += victims.length;
    this.events.onEvict?.(victims.length, bytes);
  }

  private async dropCorrupt(entry: StoredPage): Promise<void> {
    this.index.remove(entry.key);
    this.corruptions++;
    this.events.onCorrupt?.(entry.key);
    await unlink(entry.file).catch(() => {});
  }
}

async function readFully(file: string, buffer: Buffer, size: number): Promise<number> {
  const handle = await open(file, 'r');
  try {
    let offset = 0;
    while (offset < size) {
      const { bytesRead } = await handle.read(buffer, offset, size - offset, offset);
      if (bytesRead === 0) break;
      offset += bytesRead;
    }
    return offset;
  } finally {
    await handle.close();
  }
}
