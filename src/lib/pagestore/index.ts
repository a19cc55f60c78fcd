export { PageStore, type PageStoreOptions, type VerifiedPage, type PageStoreEvents, type PageFile } from './store.js';
export { LruIndex, type LruEntry, type Watermarks } from './lru.js';
export { BufferPool } from './bufferpool.js';
export { PagePolicy, type PolicyRule } from './policy.js';
export { Scrubber, type ScrubOptions } from './scrub.js';
export { PageSpool } from './spool.js';
