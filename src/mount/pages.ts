import type { StatResult } from '../client/index.js';
import { PrefetchLimit } from './prefetchlimit.js';

/** Where the mount's pages come from: verified fetches, and the memory given back after use. */
export interface PageFetch {
  fetchPage(file: StatResult, index: number): Promise<Buffer[]>;
  /**
   * The same page carried with other small pages in one request (POST /v1/pages): for pages
   * asked for ahead of their reads (a directory's next files, a file's first page at open),
   * which arrive many at a time, so a tree of small files costs a request per batch, not per file.
   */
  fetchBatchedPage(file: StatResult, index: number): Promise<Buffer[]>;
  /** The chunks' receive memory may be read into again (the client's slabs). */
  releasePage(page: Buffer[]): void;
}

/** A page held for a reader or for a reply in flight: its chunks stay valid until release(). */
export interface Lease {
  readonly chunks: Buffer[];
  /** Gives the page back (once; later calls do nothing). */
  release(): void;
}

/**
 * Prefetches in flight at once: a batch request's worth of small pages (64 items), so files
 * opened together still share requests; the batch reader sends at most 4 MiB per request anyway.
 */
const PREFETCH_SLOTS = 64;
/** Prefetches waiting for a slot (the oldest dropped past it): four more batches' worth. */
const PREFETCH_QUEUE = 256;

const pageKey = (file: StatResult, index: number): string => `${file.mount}\0${file.path}\0${file.version}\0${index}`;

interface Entry {
  key: string;
  size: number;
  /** Leases out (and callers waiting for the fetch). */
  refs: number;
  chunks?: Buffer[];
  fetch: Promise<Buffer[]>;
}

/**
 * The mount's pages, fetched once however many readers want them (single flight), and handed
 * back to the client's receive slabs as soon as nobody holds them.
 *
 * Why not the SDK's shared page cache: its pages can never be given back (anyone may still hold
 * them), so every page the mount read landed in fresh memory — faulted in, cold in every cache,
 * then garbage-collected — and the mount's JS thread spent about 3× the CPU per byte of `fanout
 * cat`, which reuses its slabs. Here every holder has a lease: a reader's readahead window, and
 * each read reply until the addon says the kernel has copied it (OPS.REPLIED). Pages nobody
 * holds are kept, up to `capacity` bytes, least recently used first out (a page fetched ahead
 * for the next file of a directory waits there for its read), then released.
 */
export class MountPages {
  private readonly entries = new Map<string, Entry>();
  /** Entries with no lease, oldest first (a Map keeps insertion order). */
  private readonly idle = new Map<string, Entry>();
  private idleBytes = 0;
  private readonly prefetches = new PrefetchLimit(PREFETCH_SLOTS, PREFETCH_QUEUE);

  constructor(
    private readonly source: PageFetch,
    readonly pageSize: number,
    private capacity: number,
  ) {}

  /**
   * Page `index` of `file` at its version, leased: release it when done with the chunks.
   * `batched`: a fetch this call starts rides in a batch request with the other small pages
   * asked for in the same turn (a page already on its way is joined however it travels).
   */
  async acquire(file: StatResult, index: number, batched = false): Promise<Lease> {
    const key = pageKey(file, index);
    let entry = this.entries.get(key);
    if (!entry) {
      entry = this.start(key, file, index, batched);
    } else if (this.idle.delete(key)) {
      this.idleBytes -= entry.size;
    }
    entry.refs++;
    const held = entry;
    // A failed fetch is forgotten at once (start()); the refs of those waiting die with it.
    const chunks = held.chunks ?? (await held.fetch);
    let released = false;
    return {
      chunks,
      release: () => {
        if (released) return;
        released = true;
        this.unref(held);
      },
    };
  }

  /**
   * Fetches a page into the idle set, for a read expected soon, batched; `use` is given the page
   * before it goes there. Bounded in flight (PrefetchLimit: a prefetch may wait, or be dropped).
   * Never throws.
   */
  prefetch(file: StatResult, index: number, use?: (lease: Lease) => Promise<void>): void {
    const start = () => {
      const fetches = !this.has(file, index);
      const done = this.acquire(file, index, true).then(
        (lease) => (use ? use(lease).catch(() => {}) : Promise.resolve()).finally(() => lease.release()),
        () => {}, // the read itself asks again and reports
      );
      return fetches ? done : undefined; // a page there or on its way is joined: no slot
    };
    if (this.has(file, index)) start();
    else this.prefetches.run(start);
  }

  /** Prefetches in flight, waiting for a slot, and dropped so far. */
  prefetchStats(): { inflight: number; queued: number; dropped: number } {
    return this.prefetches.stats();
  }

  /** The page is held, kept or being fetched: acquiring it fetches nothing. */
  has(file: StatResult, index: number): boolean {
    return this.entries.has(pageKey(file, index));
  }

  /**
   * No more pages are kept: those nobody holds go back to the slabs now, the others when their
   * last lease ends (the mount counts in another page size now: geometry.ts). Queued prefetches
   * still run and their pages go back at once.
   */
  retire(): void {
    this.capacity = 0;
    this.evict();
  }

  /** Pages held or kept, and the bytes of those kept with no lease. */
  stats(): { pages: number; idlePages: number; idleBytes: number } {
    return { pages: this.entries.size, idlePages: this.idle.size, idleBytes: this.idleBytes };
  }

  private start(key: string, file: StatResult, index: number, batched: boolean): Entry {
    const size = Math.max(0, Math.min(this.pageSize, file.size - index * this.pageSize));
    const entry: Entry = { key, size, refs: 0, fetch: undefined as unknown as Promise<Buffer[]> };
    entry.fetch = (batched ? this.source.fetchBatchedPage(file, index) : this.source.fetchPage(file, index)).then(
      (chunks) => {
        entry.chunks = chunks;
        if (entry.refs === 0) this.park(entry);
        return chunks;
      },
      (err: unknown) => {
        if (this.entries.get(key) === entry) this.entries.delete(key);
        throw err;
      },
    );
    entry.fetch.catch(() => {}); // its waiters see the error
    this.entries.set(key, entry);
    return entry;
  }

  private unref(entry: Entry): void {
    entry.refs--;
    if (entry.refs === 0 && entry.chunks && this.entries.get(entry.key) === entry) this.park(entry);
  }

  /** Keeps an unleased page for later readers, releasing the oldest beyond the capacity. */
  private park(entry: Entry): void {
    this.idle.set(entry.key, entry);
    this.idleBytes += entry.size;
    this.evict();
  }

  private evict(): void {
    while (this.idle.size > 0 && (this.idleBytes > this.capacity || this.capacity === 0)) {
      const [key, oldest] = this.idle.entries().next().value!;
      this.idle.delete(key);
      this.idleBytes -= oldest.size;
      this.entries.delete(key);
      this.source.releasePage(oldest.chunks!);
    }
  }
}
