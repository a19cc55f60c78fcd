import { close } from 'node:fs';
import type { PageFile } from './types.js';

/** One page file kept open for kernel sends. */
interface KeptFile {
  fd: number;
  /** The inode it was opened on: a file renamed over the page's name is another one. */
  ino: number;
  size: number;
  crc: number;
  /** Sends using the fd now: it is closed only when none is left. */
  lent: number;
  /** Forgotten (page gone or replaced, or pushed out): close when the last send returns it. */
  stale: boolean;
}

/**
 * Page files kept open between kernel sends of the same hot pages, at most `limit` idle ones
 * (least recently sent closed first). A hit then costs one stat of the page's name (is it still
 * the same file, unwritten since it was checked?) instead of open, fstat and close on libuv's
 * pool, three hand-offs per request (measured: bench/page-hits.mjs, docs/benchmarks.md). The
 * store forgets a page's file whenever the page leaves its index, so an evicted or dropped page's
 * disk space is not held by an open descriptor past its last send.
 */
export class SendFiles {
  /** Map order is the recency order: the first entries were sent least recently. */
  private readonly kept = new Map<string, KeptFile>();

  constructor(private readonly limit: number) {}

  /** Open files kept now (idle or in a send), for tests and status. */
  get size(): number {
    return this.kept.size;
  }

  /** The kept file of `key` if it is still inode `ino`, lent to one send (close() gives it back). */
  lend(key: string, ino: number): PageFile | undefined {
    const file = this.kept.get(key);
    if (!file) return undefined;
    if (file.ino !== ino) {
      this.forget(key);
      return undefined;
    }
    this.kept.delete(key); // to the end: most recently sent
    this.kept.set(key, file);
    return this.lendOut(file);
  }

  /** Keeps a freshly opened and checked page file for later sends and lends it to this one. */
  keep(key: string, fd: number, ino: number, size: number, crc: number): PageFile {
    this.forget(key);
    const file: KeptFile = { fd, ino, size, crc, lent: 0, stale: false };
    this.kept.set(key, file);
    const page = this.lendOut(file);
    this.trim();
    return page;
  }

  /** The page left the store (or its file changed): its descriptor is closed once no send uses it. */
  forget(key: string): void {
    const file = this.kept.get(key);
    if (!file) return;
    this.kept.delete(key);
    file.stale = true;
    if (file.lent === 0) closeQuietly(file.fd);
  }

  /**
   * Closes every idle kept file now, and resolves once they are closed: the process has no fd
   * left (EMFILE), and a kept file is only a saved open, worth less than the send that needs one.
   * How many were closed (0: nothing to give back).
   */
  async shed(): Promise<number> {
    const idle = [...this.kept].filter(([, file]) => file.lent === 0);
    for (const [key] of idle) this.kept.delete(key);
    await Promise.all(idle.map(([, file]) => new Promise<void>((resolve) => close(file.fd, () => resolve()))));
    return idle.length;
  }

  /** Forgets every kept file (each closes now, or when its send gives it back). */
  forgetAll(): void {
    for (const key of [...this.kept.keys()]) this.forget(key);
  }

  private lendOut(file: KeptFile): PageFile {
    file.lent++;
    let returned = false;
    return {
      fd: file.fd,
      size: file.size,
      crc: file.crc,
      close: async () => {
        if (returned) return;
        returned = true;
        if (--file.lent === 0 && file.stale) closeQuietly(file.fd);
      },
    };
  }

  /** Closes the least recently sent idle files past the limit (files in a send stay). */
  private trim(): void {
    if (this.kept.size <= this.limit) return;
    for (const [key, file] of this.kept) {
      if (this.kept.size <= this.limit) return;
      if (file.lent === 0) this.forget(key);
    }
  }
}

function closeQuietly(fd: number): void {
  close(fd, () => {}); // a read-only descriptor: nothing to lose if closing fails
}
