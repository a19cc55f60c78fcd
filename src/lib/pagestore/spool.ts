import type { FileHandle } from 'node:fs/promises';
import { unlink } from 'node:fs/promises';
import { writeFully } from '../writepiece/index.js';

/**
 * A page file written as its fill arrives, before the page is whole: bytes appended here are in
 * the page cache at once, so readers following the fill can be sent them from this file by the
 * kernel (sendfile) while the rest is still coming. The file lives under the store's tmp/ until
 * commit() renames it to the page's name (PageStore.commitSpool): an open descriptor follows its
 * file through the rename, and through an unlink (eviction, a corrupt page dropped) too, so a
 * send from `fd` never breaks because the page moved or left the store.
 *
 * The descriptor is closed once the spool is settled (committed or discarded) and every reader
 * that took a reference (ref()) gave it back: a reader still being sent bytes keeps it open.
 */
export class PageSpool {
  /** Bytes on the file, from offset 0: what readers may be sent. */
  written = 0;
  private refs = 1; // the spool's own, given back by settle()
  private settled = false;
  private closed: Promise<void> | undefined;

  constructor(
    private readonly handle: FileHandle,
    /** The temp file's path while it is one. */
    readonly tmp: string,
    readonly key: string,
    readonly length: number,
    /** Gives back the room the store set aside for this page (once). */
    private readonly unreserve: () => void,
    /** Told of a failed append (the store counts it, and a full disk lowers its room). */
    private readonly writeFailed: (err: Error) => void = () => {},
  ) {}

  get fd(): number {
    return this.handle.fd;
  }

  /**
   * Appends `data` at `written` (the caller orders its appends: one at a time). Rejects on any
   * write error (ENOSPC, EIO); the spool is then useless and the caller discards it.
   */
  async append(data: Buffer): Promise<void> {
    try {
      await writeFully(this.handle, data, this.written);
    } catch (err) {
      this.writeFailed(err as Error);
      throw err;
    }
    this.written += data.length;
  }

  /** The file's mtime now (what the store records as checked: the bytes were CRC'd as they came). */
  async mtime(): Promise<number | undefined> {
    return (await this.handle.stat().catch(() => undefined))?.mtimeMs;
  }

  /** A reader keeps the descriptor open until the returned function is called (once). */
  ref(): () => void {
    this.refs++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.unref();
    };
  }

  /**
   * The store is done with the spool (it was renamed into place, or is dropped): its room is
   * given back and the descriptor closes when the last reader lets go. `unlinkTmp` removes the
   * temp file (a spool that did not become a page).
   */
  async settle(unlinkTmp: boolean): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    this.unreserve();
    if (unlinkTmp) await unlink(this.tmp).catch(() => {});
    this.unref();
  }

  private unref(): void {
    if (--this.refs > 0 || this.closed) return;
    this.closed = this.handle.close().catch(() => {});
  }
}
