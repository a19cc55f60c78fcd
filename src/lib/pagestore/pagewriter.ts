import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { FanoutError } from '../../core/errors.js';
import { isDiskFull } from '../statefile/index.js';
import type { DiskRoom } from './diskroom.js';
import type { LruIndex } from './lru.js';
import { ensureShard, pagePath, writePageFile, type KnownDirs } from './pagefiles.js';
import { PageSpool } from './spool.js';
import type { PageStoreEvents, StoredPage, WriteFailureReason } from './types.js';

/** What the writer needs of the store it writes for: its index and room, and how it makes room. */
export interface PageWriterHost {
  readonly pagesDir: string;
  readonly tmpDir: string;
  readonly index: LruIndex<StoredPage>;
  /** The shard directories known to exist, counted in the index's `used` (StoreDirs). */
  readonly dirs: KnownDirs;
  readonly room: DiskRoom;
  readonly events: PageStoreEvents;
  /** Replaces the temp file write (tests inject ENOSPC and partial writes); disables spools. */
  readonly writeFile?: (file: string, data: Buffer) => Promise<void>;
  checkDisk(options?: { forgetFull?: boolean }): Promise<void>;
  /** What `bytes` of a page take on disk (whole file-system blocks): what capacity counts. */
  footprint(bytes: number): number;
  /** Evicts until `extra` more bytes fit under the effective capacity. */
  evictIfNeeded(extra: number): Promise<void>;
}

/**
 * Owns getting a page's bytes under its real name: temp files in tmp/ renamed into place (so a
 * crash or a failed source read never leaves a partial page under a real name), the shard
 * directories (known to exist: PageStore's StoreDirs), the bytes of writes in flight (room is made for them before they
 * land in the index), and the disk-full path: such a write re-reads free space, evicts and is
 * retried once, then the page stays uncached. Reads, eviction and the index stay with PageStore.
 */
export class PageWriter {
  private tmpCounter = 0;
  /** Footprints of pages being written: room is made for them before they land in the index. */
  private writing = 0;
  writeFailures = 0;

  constructor(private readonly host: PageWriterHost) {}

  /** Stores a complete, already verified page, making room first (see PageStore.put). */
  async put(key: string, data: Buffer, crc: number): Promise<void> {
    const { index, room } = this.host;
    if (index.peek(key)) return;
    if (room.due()) await this.host.checkDisk({ forgetFull: true });
    const footprint = this.host.footprint(data.length);
    if (footprint > index.capacity) {
      const error = new FanoutError('STORE_FULL', `page of ${data.length} bytes (${footprint} on disk) exceeds the page store's effective capacity (${index.capacity} bytes)`);
      this.noteWriteFailure('no_room', error);
      throw error;
    }
    const { shardDir, file } = pagePath(this.host.pagesDir, key, crc);
    this.writing += footprint;
    let writtenAt: number | undefined;
    try {
      await this.host.evictIfNeeded(this.writing);
      if (!this.roomLeft(footprint)) {
        const { used, capacity } = this.host.index;
        const error = new FanoutError('STORE_FULL', `the page store is full of pages that may not be evicted (pinned): ${used} of ${capacity} bytes; page not stored`);
        this.noteWriteFailure('no_room', error);
        throw error;
      }
      try {
        writtenAt = await this.writePage(shardDir, file, key, data);
      } catch (err) {
        if (!isDiskFull(err)) throw this.writeError('io_error', err);
        this.noteWriteFailure('disk_full', err as Error);
        // The disk holds less than the store thought: never plan for more than is held now.
        room.markFull();
        await this.host.checkDisk();
        await this.host.evictIfNeeded(this.writing);
        try {
          writtenAt = await this.writePage(shardDir, file, key, data);
        } catch (retryErr) {
          throw this.writeError(isDiskFull(retryErr) ? 'disk_full' : 'io_error', retryErr);
        }
      }
    } finally {
      this.writing -= footprint;
    }
    index.add({ key, size: data.length, footprint, crc, file, verifiedAt: writtenAt, markedAt: writtenAt });
  }

  /** Starts a page file written as its fill arrives, after making room (see PageStore.spool). */
  async spool(key: string, length: number): Promise<PageSpool | undefined> {
    const footprint = this.host.footprint(length);
    if (this.host.writeFile || footprint > this.host.index.capacity) return undefined;
    if (this.host.room.due()) await this.host.checkDisk({ forgetFull: true });
    this.writing += footprint;
    let reserved = true;
    const unreserve = () => {
      if (reserved) this.writing -= footprint;
      reserved = false;
    };
    const tmp = this.tmpName(key);
    try {
      await this.host.evictIfNeeded(this.writing);
      if (!this.roomLeft(footprint)) throw new Error('no room'); // put() says why, and counts it
      // A failed append is a failed page write like put()'s: counted, and a full disk noted.
      const writeFailed = (err: Error) => {
        this.noteWriteFailure(isDiskFull(err) ? 'disk_full' : 'io_error', err);
        if (isDiskFull(err)) this.host.room.markFull();
      };
      return new PageSpool(await open(tmp, 'w+'), tmp, key, length, unreserve, writeFailed);
    } catch {
      unreserve();
      await unlink(tmp).catch(() => {});
      return undefined;
    }
  }

  /** Renames a whole spool into place (see PageStore.commitSpool); settles it whatever happens. */
  async commitSpool(spool: PageSpool, crc: number): Promise<void> {
    let renamed = false;
    try {
      if (this.host.index.peek(spool.key)) return;
      if (spool.written !== spool.length) throw new FanoutError('INTERNAL', `spool holds ${spool.written} of ${spool.length} bytes`);
      const { shardDir, file } = pagePath(this.host.pagesDir, spool.key, crc);
      const writtenAt = await spool.mtime();
      await ensureShard(shardDir, this.host.dirs);
      try {
        await rename(spool.tmp, file);
      } catch (err) {
        throw this.writeError('io_error', err);
      }
      renamed = true;
      this.host.index.add({ key: spool.key, size: spool.length, footprint: this.host.footprint(spool.length), crc, file, verifiedAt: writtenAt, markedAt: writtenAt });
    } finally {
      await spool.settle(!renamed);
    }
  }

  /** Unique within the process; the pid keeps two processes sharing a directory apart. */
  private tmpName(key: string): string {
    return join(this.host.tmpDir, `${key}.${process.pid}.${this.tmpCounter++}`);
  }

  /** Returns the page file's mtime, read on the written file (a rename keeps it): what openForSend trusts. */
  private writePage(shardDir: string, file: string, key: string, data: Buffer): Promise<number | undefined> {
    return writePageFile(this.tmpName(key), shardDir, file, data, this.host.dirs, this.host.writeFile);
  }

  /**
   * After eviction, stored pages that still leave no room for `bytes` (a footprint) are pages eviction may not
   * take (pinned): the page is not stored (STORE_FULL, counted as `no_room`) and is served
   * uncached, so pins never grow the store past its capacity (they took a 3 MiB store to 36 MiB).
   */
  private roomLeft(bytes: number): boolean {
    return this.host.index.used + bytes <= this.host.index.capacity;
  }

  private noteWriteFailure(reason: WriteFailureReason, error: Error): void {
    this.writeFailures++;
    this.host.events.onWriteFailure?.(reason, error);
  }

  private writeError(reason: WriteFailureReason, err: unknown): FanoutError {
    this.noteWriteFailure(reason, err as Error);
    // The errno code, not the message: messages carry server paths, and these can reach clients.
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    if (reason === 'disk_full') return new FanoutError('DISK_FULL', `the page store's disk is full (${code}): page not stored`, { cause: err });
    return new FanoutError('INTERNAL', `page store write failed (${code})`, { cause: err });
  }
}
