import { monotonicClock } from '../core/clock.js';
import { FanoutError, isFanoutError } from '../core/errors.js';
import { isFanoutName, type FanoutPath } from '../core/paths.js';
import type { DirEntry, FileInfo } from '../core/types.js';
import type { Ufs } from '../lib/ufs/index.js';
import type { TtlCache } from './sourcecache.js';
import type { SourceListings } from './listings.js';

/** Least time between two uncached stats of one path prompted by a version mismatch. */
const REFRESH_MS = 250;

/**
 * The worker's view of its sources' files: stat and list answers cached for statTtl (the
 * documented bounded staleness), shared by the HTTP API and the S3 gateway. A service of its
 * own rather than router state, so both front ends see one cache.
 */
export class FileInfoService {
  private readonly refreshed = new Map<string, number>();

  constructor(
    private readonly ufs: (mount: string) => Ufs,
    private readonly caches: { stat: TtlCache<FileInfo>; list: TtlCache<DirEntry[]> },
    /** Listings running at once and who waits for them (limits.sourceListings). */
    private readonly listings: SourceListings,
  ) {}

  /** Cached stat; the TTL bounds how stale a version a new reader may see. */
  stat(target: FanoutPath): Promise<FileInfo> {
    if (!target.mount) throw new FanoutError('IS_A_DIRECTORY', 'the root is a directory');
    const ufs = this.ufs(target.mount);
    if (!target.path) throw new FanoutError('IS_A_DIRECTORY', `/${target.mount}/ is a directory`);
    return this.caches.stat.get(`${target.mount}/${target.path}`, () => ufs.stat(target.path));
  }

  /**
   * Cached listing of one directory level (shared with the S3 gateway). Names no fanout path can
   * hold (control characters, backslashes: core/paths.ts) are left out: listed, they could be
   * seen and stat-ed through the mount but never opened. A listing not cached runs under the
   * worker's listing limit, shared by the requests asking for it meanwhile; `signal` is the
   * request's (its client left): the listing stops once every request waiting for it has left.
   */
  async listDir(target: FanoutPath, signal?: AbortSignal): Promise<DirEntry[]> {
    const ufs = this.ufs(target.mount);
    const key = `${target.mount}/${target.path}`;
    const cached = this.caches.list.fresh(key);
    if (cached) return cached;
    return this.listings.list(key, signal, (listSignal) => {
      const listing = ufs.list(target.path, listSignal).then((entries) => entries.filter((entry) => isFanoutName(entry.name)));
      // Cached once it ended, for statTtl (a not-found answer too; the cache keeps no other
      // error): while it runs, requests join it here, where each may leave.
      const keep = () => void this.caches.list.get(key, () => listing);
      listing.then(keep, (err: unknown) => isFanoutError(err, 'NOT_FOUND') && keep());
      return listing;
    });
  }

  /**
   * The stat again, past the cache, when a client names another version than the cached one:
   * the client may have seen a newer version through a worker whose cache is younger. At most
   * one refresh per path per REFRESH_MS, so bogus versions cannot turn into a stat flood.
   */
  async freshStat(target: FanoutPath): Promise<FileInfo> {
    const key = `${target.mount}/${target.path}`;
    const now = monotonicClock.now();
    const last = this.refreshed.get(key) ?? 0;
    if (now - last >= REFRESH_MS) {
      if (this.refreshed.size > 10_000) this.refreshed.clear();
      this.refreshed.set(key, now);
      this.caches.stat.invalidate(key);
    }
    return this.stat(target);
  }
}
