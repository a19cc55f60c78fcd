import type { Logger } from 'pino';
import type { PageRef } from '../core/types.js';
import type { PageStore } from '../lib/pagestore/index.js';
import type { PageFill } from '../lib/transfer/index.js';
import { contentMatches } from './content.js';
import type { FillFile } from './fillfile.js';

/**
 * A completed fill landing in the store: only a page this worker keeps, only if its bytes are the
 * content the request named, by a rename of the fill's file when every byte reached it (no second
 * write), else written from the fill's buffer. A page that cannot be stored was still served: the
 * failure is logged, never passed to the readers.
 */
export interface FillCommitDeps {
  store: PageStore;
  logger: Logger;
  /**
   * Told of every page about to be stored after a fill (pin and TTL rules by path), before it is:
   * a rejection keeps the page out of the store (its pin or TTL could not be saved).
   */
  onStoring?: (key: string, ref: PageRef) => Promise<void>;
}

export async function commitFill(deps: FillCommitDeps, key: string, ref: PageRef, done: PageFill, keep: boolean, file: FillFile | undefined): Promise<void> {
  const { store, logger } = deps;
  // The page's file, if every byte reached it: stored by a rename instead of a second write.
  const spool = await file?.take();
  try {
    if (!keep) return;
    if (!contentMatches(ref, done.buffer, done.sha256)) {
      logger.warn({ key, mount: ref.mount, path: ref.path, page: ref.index }, 'page read for a content hash does not have that hash; not stored');
      return;
    }
    // Its pin or TTL on disk before its file: a kill in between must not leave it unruled.
    await deps.onStoring?.(key, ref);
    if (!spool || !(await store.commitSpool(spool, done.crc).then(() => true, (err) => void logger.warn({ err, key }, 'page file could not be committed; writing it again')))) {
      await store.put(key, done.buffer, done.crc);
    }
  } catch (err) {
    logger.warn({ err, key }, 'page read from source could not be stored; served uncached');
  } finally {
    await spool?.settle(true);
  }
}
