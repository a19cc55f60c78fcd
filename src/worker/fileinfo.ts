import { systemClock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import { isFanoutName, type FanoutPath } from '../core/paths.js';
import type { DirEntry, FileInfo } from '../core/types.js';
import type { Ufs } from '../lib/ufs/index.js';
import type { TtlCache } from './sourcecache.js';

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
   * seen and stat-ed through the mount but never opened.
   */
  listDir(target: FanoutPath): Promise<DirEntry[]> {
    const ufs = this.ufs(target.mount);
    return this.caches.list.get(`${target.mount}/${target.path}`, async () => (await ufs.list(target.path)).filter((entry) => isFanoutName(entry.name)));
  }

  /**
   * The stat again, past the cache, when a client names another version than the cached one:
   * the client may have seen a newer version through a worker whose cache is younger. At most
   * one refresh per path per REFRESH_MS, so bogus versions cannot turn into a stat flood.
   */
  async freshStat(target: FanoutPath): Promise<FileInfo> {
    const key = `${target.mount}/${target.path}`;
    const now = systemClock.now();
    const last = this.refreshed.get(key) ?? 0;
    if (now - last >= REFRESH_MS) {
      if (this.refreshed.size > 10_000) this.refreshed.clear();
      this.refreshed.set(key, now);
      this.caches.stat.invalidate(key);
    }
    return this.stat(target);
  }
}
