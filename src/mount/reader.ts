import type { StatResult } from '../client/index.js';
import { pagesForRange } from '../core/pages.js';
import { sliceChunks } from '../lib/cluster/index.js';

/** Where pages come from: the SDK's readPage (shared page cache, one fetch per page). */
export interface PageSource {
  readPage(file: StatResult, index: number): Promise<Buffer[]>;
}

/**
 * Reads of one open file, at the version it was opened at. The kernel asks for up to max_read
 * bytes at a time and keeps several such reads in flight, in no particular order; this reader
 * turns them into page reads, and when the reads walk forward through the file it fetches the
 * pages ahead (doubling the window up to `readahead` pages) so that the next kernel reads find
 * their pages already arrived. Random reads (an index lookup through mmap) prefetch nothing.
 */
export class FileReader {
  /** Pages fetched ahead or being read, kept until the reads move past them. */
  private readonly held = new Map<number, Promise<Buffer[]>>();
  /** Highest page read so far; -1 before the first read. */
  private furthest = -1;
  private streak = 0;
  private readonly lastPage: number;

  constructor(
    readonly file: StatResult,
    private readonly source: PageSource,
    private readonly pageSize: number,
    private readonly readahead: number,
  ) {
    this.lastPage = Math.ceil(file.size / pageSize) - 1;
  }

  /** Bytes [offset, offset + length) clipped to the file, as chunks of the cached pages. */
  async read(offset: number, length: number): Promise<Buffer[]> {
    const end = Math.min(this.file.size, offset + length);
    if (offset >= end) return [];
    const { first, last } = pagesForRange(offset, end, this.pageSize);
    this.advance(first, last);
    const pages: Promise<Buffer[]>[] = [];
    for (let index = first; index <= last; index++) pages.push(this.page(index));
    const out: Buffer[] = [];
    for (let index = first; index <= last; index++) {
      const page = await pages[index - first]!;
      const base = index * this.pageSize;
      out.push(...sliceChunks(page, Math.max(offset, base) - base, end - base));
    }
    return out;
  }

  /** Drops the pages held for this file (they stay in the shared cache while recent). */
  close(): void {
    this.held.clear();
  }

  private page(index: number): Promise<Buffer[]> {
    let page = this.held.get(index);
    if (!page) {
      page = this.source.readPage(this.file, index);
      this.held.set(index, page);
      // A failed page is forgotten so that the next read retries it; whoever awaits it sees the error.
      const failed = page;
      failed.catch(() => {
        if (this.held.get(index) === failed) this.held.delete(index);
      });
    }
    return page;
  }

  private advance(first: number, last: number): void {
    // Near the furthest page read so far, on either side: reads in flight overtake each other.
    const near = Math.max(1, this.readahead);
    const sequential = this.furthest >= 0 && first >= this.furthest - near && first <= this.furthest + near;
    this.streak = sequential ? Math.min(this.streak + 1, 30) : 0;
    this.furthest = sequential ? Math.max(this.furthest, last) : last;
    // Reads arriving out of order may still want the page just behind; older ones are done
    // (and a straggler finds them in the shared cache). A jump elsewhere drops the window.
    for (const index of this.held.keys()) {
      if (sequential ? index < first - 1 : index < first || index > last) this.held.delete(index);
    }
    if (!sequential || this.readahead === 0) return;
    const until = Math.min(this.lastPage, this.furthest + Math.min(this.readahead, 2 ** this.streak));
    for (let index = this.furthest + 1; index <= until; index++) this.page(index);
  }
}
