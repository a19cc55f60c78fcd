// The LRU alone: the page store's index would load the store and zod into every client.
import { LruIndex } from '../pagestore/lru.js';

interface CachedPage {
  key: string;
  size: number;
  page: Buffer[];
}

export interface PageCacheStats {
  /** Pages answered from memory. */
  hits: number;
  /** Requests that joined a fetch already in flight for the same page. */
  joined: number;
  /** Pages fetched. */
  fetched: number;
}

/**
 * A small in-memory LRU of recently read pages, shared by every reader of one client, with
 * single flight: readers of the same file (8 processes reading one model through a mount)
 * share each page fetch instead of each fetching it. Only verified pages are kept (a failed
 * fetch is forgotten at once, so the next reader retries). Bounded by bytes.
 */
export class PageCache {
  private readonly lru: LruIndex<CachedPage>;
  private readonly inflight = new Map<string, Promise<Buffer[]>>();
  private readonly counters: PageCacheStats = { hits: 0, joined: 0, fetched: 0 };

  constructor(readonly capacity: number) {
    this.lru = new LruIndex<CachedPage>(Math.max(capacity, 1), { high: 1, low: 1 });
  }

  /** The page under `key`: from memory, from a fetch in flight, or from `fetch()`. */
  get(key: string, size: number, fetch: () => Promise<Buffer[]>): Promise<Buffer[]> {
    const cached = this.lru.touch(key);
    if (cached) {
      this.counters.hits++;
      return Promise.resolve(cached.page);
    }
    const pending = this.inflight.get(key);
    if (pending) {
      this.counters.joined++;
      return pending;
    }
    this.counters.fetched++;
    const page = fetch();
    this.inflight.set(key, page);
    page.then(
      (chunks) => {
        this.inflight.delete(key);
        if (size > this.capacity) return;
        this.lru.evict(size);
        this.lru.add({ key, size, page: chunks });
      },
      () => this.inflight.delete(key),
    );
    return page;
  }

  stats(): PageCacheStats & { bytes: number; pages: number } {
    return { ...this.counters, bytes: this.lru.used, pages: this.lru.size };
  }
}
