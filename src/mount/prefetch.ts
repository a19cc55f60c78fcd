import type { StatResult } from '../client/index.js';
import type { DirEntry } from '../core/types.js';

/** What the prefetcher needs: the mount's cached metadata and its pages (pages.ts). */
export interface PrefetchDeps {
  list(path: string): Promise<DirEntry[]>;
  stat(path: string): Promise<StatResult>;
  /** Fetches a page to keep for a read expected soon; never throws. */
  prefetchPage(file: StatResult, index: number): void;
}

export interface PrefetchOptions {
  /** Files after the one opened whose first page is fetched ahead (0: off). */
  files: number;
  /** Bound on the bytes fetched ahead of the file opened (keep it under the page cache). */
  bytes: number;
  pageSize: number;
}

interface DirWalk {
  /** Position in the listing of the last file opened. */
  last: number;
  /** Last position whose first page was asked for. */
  ahead: number;
}

/** Directories whose walk is remembered at once (the oldest is forgotten first). */
const MAX_WALKS = 64;

/**
 * Readahead across files. `cat *`, `cp -r`, `rsync` and index loaders open the files of a
 * directory one after the other in listing order, and the kernel asks lookup, open and read of
 * each one in turn: through a cluster every file would cost a round trip that nothing overlaps.
 * Once two opens in a row walk forward through a directory's listing, the first pages of the
 * next files are fetched into the shared page cache, so their reads find them there. Random
 * opens (a service looking up one shard) fetch nothing ahead.
 */
export class DirectoryPrefetch {
  private readonly walks = new Map<string, DirWalk>();
  private readonly positions = new WeakMap<DirEntry[], Map<string, number>>();

  constructor(
    private readonly deps: PrefetchDeps,
    private options: PrefetchOptions,
  ) {}

  /** The mount counts in another page size now (what a first page may take of `bytes`). */
  follow(pageSize: number): void {
    this.options = { ...this.options, pageSize };
  }

  /** A file was opened: `path` is its mount path ("data/dir/name"). Never throws. */
  async opened(path: string): Promise<void> {
    if (this.options.files <= 0) return;
    const slash = path.lastIndexOf('/');
    if (slash <= 0) return;
    const parent = path.slice(0, slash);
    let entries: DirEntry[];
    try {
      entries = await this.deps.list(parent);
    } catch {
      return; // not listable (HTTP source): nothing to walk
    }
    const index = this.positionsOf(entries).get(path.slice(slash + 1));
    if (index === undefined) return;
    const walk = this.walks.get(parent);
    this.walks.delete(parent); // re-inserted last: the map's order is the age order
    const forward = walk !== undefined && index > walk.last && index <= walk.last + this.options.files + 1;
    const next: DirWalk = { last: index, ahead: forward ? Math.max(walk!.ahead, index) : index };
    this.walks.set(parent, next);
    if (this.walks.size > MAX_WALKS) this.walks.delete(this.walks.keys().next().value!);
    if (!forward) return;
    // The files in the window not yet asked for. They are asked for together once half the
    // window is due (or the listing ends): pages asked for in one turn leave in one batch
    // request (pages.ts), where topping the window up by one file per open cost a request each.
    const due: number[] = [];
    let bytes = 0;
    let files = 0;
    let lead = 0;
    let at = index + 1;
    for (; at < entries.length && files < this.options.files; at++) {
      const entry = entries[at]!;
      if (entry.type !== 'file') continue;
      files++;
      bytes += Math.min(entry.size ?? this.options.pageSize, this.options.pageSize);
      if (bytes > this.options.bytes) break;
      if (at <= next.ahead) lead++;
      else due.push(at);
    }
    const listingEnds = at >= entries.length;
    if (lead > 0 && due.length < Math.ceil((lead + due.length) / 2) && !listingEnds) return;
    for (const position of due) {
      const entry = entries[position]!;
      next.ahead = position;
      if (entry.size) void this.fetchFirstPage(`${parent}/${entry.name}`);
    }
  }

  private async fetchFirstPage(path: string): Promise<void> {
    try {
      this.deps.prefetchPage(await this.deps.stat(path), 0);
    } catch {
      // A prefetch that fails costs nothing: the read itself asks again and reports.
    }
  }

  private positionsOf(entries: DirEntry[]): Map<string, number> {
    let positions = this.positions.get(entries);
    if (!positions) {
      positions = new Map(entries.map((e, i) => [e.name, i]));
      this.positions.set(entries, positions);
    }
    return positions;
  }
}
