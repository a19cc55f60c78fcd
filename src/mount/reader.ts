import type { StatResult } from '../client/index.js';
import { abortError } from '../core/errors.js';
import { pagesForRange } from '../core/pages.js';
import { sliceChunks } from '../lib/cluster/index.js';
import type { ByteBudget } from '../lib/transfer/index.js';
import { roomKey, type ReadRoom, type RoomPage } from './readroom.js';

import { untilAborted } from './abort.js';
import type { Lease } from './pages.js';

/** Where pages come from: the mount's leased pages (pages.ts: one fetch per page). */
export interface PageSource {
  /** `batched`: the fetch may ride with other small pages in one request (pages.ts). */
  acquire(file: StatResult, index: number, batched?: boolean): Promise<Lease>;
  /** Fetches a page into the pages nobody holds (bounded by the mount's --cache), batched. */
  prefetch?(file: StatResult, index: number): void;
  /** The page is in memory or on its way (held, kept, or being fetched): a read of it fetches nothing. */
  has?(file: StatResult, index: number): boolean;
}

/**
 * The mount-wide bytes a reader's window takes from (ByteBudget.tryAcquire: never waited for),
 * whatever the number of open files; without one, that use is unbounded.
 */
export interface ReaderAllowances {
  /** First pages held for opened files until their first read (start()). */
  starts?: ByteBudget;
  /**
   * Pages fetched ahead of the reads (advance()), and the pages of a read the window keeps after
   * it for the reads that follow (keep()); the pages of a read itself are always fetched.
   */
  ahead?: ByteBudget;
  /**
   * Pages a read fetches itself (neither in its window nor anywhere in the mount's pages), held
   * until its reply is sent. Waited for (ByteBudget.acquire): a read cannot be refused, so past
   * the bound reads queue instead of each fetching a page (found by a fault hunt: N readers of
   * distinct files held N × 1–2 pages). A waiting read holds nothing, so no wait can deadlock.
   * A page on its way holds room once, whatever the reads that want it (readroom.ts).
   */
  reads?: ReadRoom;
}

/** A read's bytes, and the pages they are views of: release them (and `room`) once the bytes are sent. */
export interface ReadResult {
  chunks: Buffer[];
  leases: Lease[];
  /** Gives back the `reads` allowance the read's own fetches took (none when its pages were in memory). */
  room?: () => void;
}

/** The leases of pages a read got, and its `reads` room: the read is not answered with them. */
function giveBack(settled: PromiseSettledResult<Lease>[], room: (() => void) | undefined): void {
  for (const s of settled) if (s.status === 'fulfilled') s.value.release();
  room?.();
}

/**
 * Reads of one open file, at the version it was opened at. The kernel asks for up to max_read
 * bytes at a time and keeps several such reads in flight, in no particular order; this reader
 * turns them into page reads, and when the reads walk forward through the file it fetches the
 * pages ahead (doubling the window up to `readahead` pages) so that the next kernel reads find
 * their pages already arrived. Random reads (an index lookup through mmap) prefetch nothing.
 */
export class FileReader {
  /** Pages fetched ahead or being read, leased until the reads move past them. */
  private readonly held = new Map<number, Promise<Lease>>();
  /** Highest page read so far; -1 before the first read. */
  private furthest = -1;
  private streak = 0;
  private readonly lastPage: number;
  /** The release of the `starts` bytes this reader holds for its first page until its first read (see start()). */
  private startHeld: (() => void) | undefined;
  /** Pages of the window counted against the `ahead` allowance, with their releases. */
  private readonly aheadHeld = new Map<number, () => void>();

  constructor(
    readonly file: StatResult,
    private readonly source: PageSource,
    /** What its page indexes count in: one reader never mixes page sizes (fs.ts moves a handle to a new reader). */
    readonly pageSize: number,
    private readonly readahead: number,
    /** Called with each page the window takes; the window holds the lease returned (offered.ts). */
    private readonly offer?: (index: number, lease: Lease) => Lease,
    private readonly allowances: ReaderAllowances = {},
  ) {
    this.lastPage = Math.ceil(file.size / pageSize) - 1;
  }

  /**
   * Bytes [offset, offset + length) clipped to the file, as views of the pages' chunks (no
   * copy), with a lease on each page they come from: the caller releases them once the bytes
   * are sent (the reader's own window may drop those pages before that).
   *
   * `signal` (the kernel interrupted the read: its reader got a signal) ends the read's waits
   * with ABORTED: it leaves the queue for `reads` room holding nothing, or stops waiting for its
   * pages. Those fetches go on for the window and other readers of the pages; the read's leases
   * and room are given back when they end, so the memory they take stays counted until then.
   */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<ReadResult> {
    const end = Math.min(this.file.size, offset + length);
    if (offset >= end) return { chunks: [], leases: [] };
    const { first, last } = pagesForRange(offset, end, this.pageSize);
    this.advance(first, last);
    for (let index = first; index <= last; index++) this.keep(index);
    // All the pages this read fetches at once, or none: never a part held while waiting for the rest.
    const room = this.allowances.reads ? await this.allowances.reads.take(() => this.missingPages(first, last), signal) : undefined;
    if (signal?.aborted) {
      room?.();
      throw abortError(signal);
    }
    const pages: Promise<Lease>[] = [];
    for (let index = first; index <= last; index++) pages.push(this.source.acquire(this.file, index)); // joins the window's fetch
    this.readStarted(); // after the read's own leases: a first page the window lets go is not dropped meanwhile
    const arrived = Promise.allSettled(pages);
    const settled = await untilAborted(arrived, signal).catch((err: unknown) => {
      void arrived.then((late) => giveBack(late, room));
      throw err;
    });
    const leases = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      giveBack(settled, room);
      throw failed.reason;
    }
    const chunks: Buffer[] = [];
    for (let index = first; index <= last; index++) {
      const base = index * this.pageSize;
      chunks.push(...sliceChunks(leases[index - first]!.chunks, Math.max(offset, base) - base, end - base));
    }
    return room ? { chunks, leases, room } : { chunks, leases };
  }

  /**
   * A read of [offset, offset + length) was answered without this reader (the addon, from
   * offered pages): the window moves as if it had come here.
   */
  served(offset: number, length: number): void {
    const end = Math.min(this.file.size, offset + length);
    if (offset >= end) return;
    const { first, last } = pagesForRange(offset, end, this.pageSize);
    this.advance(first, last);
    this.readStarted();
  }

  /**
   * Fetches the first page now: opened files are about to be read from the start. Batched:
   * files opened together (`xargs -P`, a loader's pool) share requests; a page the directory
   * prefetch asked for is joined, not asked again.
   */
  start(): void {
    if (this.lastPage < 0) return;
    const { starts } = this.allowances;
    if (starts) {
      this.startHeld = starts.tryAcquire(this.pageBytes(0));
      if (!this.startHeld) return this.source.prefetch?.(this.file, 0);
    }
    this.page(0, true);
  }

  /** Gives back the pages held for this file. */
  close(): void {
    this.readStarted();
    for (const index of [...this.held.keys()]) this.drop(index);
  }

  /**
   * The file is being read (or closed): its first page is the window's like any other, no longer
   * held against `starts` but against `ahead` (or let go when that is used up: an open file read
   * once and left open must not hold a page outside every allowance).
   */
  private readStarted(): void {
    if (!this.startHeld) return;
    this.startHeld();
    this.startHeld = undefined;
    const { ahead } = this.allowances;
    if (!ahead || !this.held.has(0) || this.aheadHeld.has(0)) return;
    const release = ahead.tryAcquire(this.pageBytes(0));
    if (release) this.aheadHeld.set(0, release);
    else this.drop(0);
  }

  /**
   * The window keeps page `index` of a read for the reads after it (the kernel sends several per
   * page, and out of order), within the `ahead` allowance: past it the read's own lease is all
   * that holds the page, and it goes to the kept pages (--cache) once sent. Without allowances
   * (tests), always.
   */
  private keep(index: number): void {
    if (this.held.has(index)) return;
    const { ahead, reads } = this.allowances;
    if (ahead) {
      const release = ahead.tryAcquire(this.pageBytes(index));
      if (!release) return;
      this.aheadHeld.set(index, release);
    } else if (reads) {
      return;
    }
    this.page(index);
  }

  /** Pages in [first, last] that a read would have to fetch itself (neither in the window nor in the mount's pages). */
  private missingPages(first: number, last: number): RoomPage[] {
    const pages: RoomPage[] = [];
    for (let index = first; index <= last; index++) {
      if (!this.held.has(index) && !this.source.has?.(this.file, index)) pages.push({ key: roomKey(this.file, index, this.pageSize), bytes: this.pageBytes(index) });
    }
    return pages;
  }

  private pageBytes(index: number): number {
    return Math.min(this.pageSize, this.file.size - index * this.pageSize);
  }

  private drop(index: number): void {
    const page = this.held.get(index);
    this.forget(index);
    page?.then(
      (lease) => lease.release(),
      () => {},
    );
  }

  private page(index: number, batched = false): Promise<Lease> {
    let page = this.held.get(index);
    if (!page) {
      page = this.source.acquire(this.file, index, batched);
      const offer = this.offer;
      if (offer) page = page.then((lease) => offer(index, lease));
      this.held.set(index, page);
      // A failed page is forgotten so that the next read retries it; whoever awaits it sees the error.
      const failed = page;
      failed.catch(() => {
        if (this.held.get(index) === failed) this.forget(index);
      });
    }
    return page;
  }

  /** Takes `index` out of the window, giving back what it counted against the `ahead` allowance. */
  private forget(index: number): void {
    this.held.delete(index);
    this.aheadHeld.get(index)?.();
    this.aheadHeld.delete(index);
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
      if (sequential ? index < first - 1 : index < first || index > last) this.drop(index);
    }
    if (!sequential || this.readahead === 0) return;
    const until = Math.min(this.lastPage, this.furthest + Math.min(this.readahead, 2 ** this.streak));
    const { ahead } = this.allowances;
    for (let index = this.furthest + 1; index <= until; index++) {
      if (this.held.has(index)) continue;
      // Many sequential readers share the mount's allowance: each reads ahead less, none runs
      // the mount out of memory (found by a fault hunt: 64 readers held 2.45 GB in their windows).
      if (ahead) {
        const release = ahead.tryAcquire(this.pageBytes(index));
        if (!release) break;
        this.aheadHeld.set(index, release);
      }
      this.page(index);
    }
  }
}
