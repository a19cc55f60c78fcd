import { FollowedPageSize } from '../client/pagesize.js';

export interface PageSizeDeps {
  /** The cluster's page size: the session's answer (`fresh`: asked now), undefined when it cannot be learnt. */
  clusterPageSize(fresh: boolean): Promise<number | undefined>;
  /** Moves everything the mount counts in pages from `from` to `to` (fs.ts: its pages, readers, offers). */
  rebuild(from: number, to: number): void;
  warn(fields: object, message: string): void;
}

/**
 * The page size the mount counts in, following the cluster's (the SDK's FollowedPageSize: a
 * refusal for the page size, then a look at the cluster's). When it changed, the mount rebuilds
 * everything it counts in pages in the new size, says so once, and the refused read is read again.
 * The mount's own state is what was counted in the old size, and it is all the mount's to drop.
 */
export class PageSizeFollower extends FollowedPageSize {
  constructor(pageSize: number, deps: PageSizeDeps) {
    super(pageSize, {
      clusterPageSize: (fresh) => deps.clusterPageSize(fresh),
      changed: (from, size) => {
        deps.rebuild(from, size);
        deps.warn(
          { code: 'PAGE_SIZE_MISMATCH', mountPageSize: from, clusterPageSize: size },
          `the cluster's pageSize changed from ${from} to ${size} bytes (its workers restarted with another pageSize): this mount now counts pages of ${size} bytes; the pages it kept of ${from} bytes are dropped and reads refused in the old size are read again`,
        );
      },
    });
  }
}
