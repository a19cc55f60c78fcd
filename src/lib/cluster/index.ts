export { ClusterReader, sliceChunks, type ClusterReaderOptions, type Placement, type SourceFallback } from './reader.js';
export { PageFetcher, CHECKSUM_HEADER, DIRECT_HEADER, type PageFetcherOptions, type PageRequestOptions } from './pagefetcher.js';
export { PageCache, type PageCacheStats } from './pagecache.js';
