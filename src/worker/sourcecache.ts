import type { DirEntry, FileInfo } from '../core/types.js';
import { TtlCache } from '../lib/ttlcache/index.js';

/** The worker's stat and list caches: the TTL is the documented bounded staleness. */
export { TtlCache };
export type StatCache = TtlCache<FileInfo>;
export type ListCache = TtlCache<DirEntry[]>;
