export { ClusterReader, checkRange, pageStream, sliceChunks, type ClusterReaderOptions, type Placement, type SourceFallback } from './reader.js';
export {
  PageFetcher,
  CHECKSUM_HEADER,
  DIRECT_HEADER,
  ERROR_TRAILER,
  ERROR_MESSAGE_TRAILER,
  errorTrailers,
  type PageFetcherOptions,
  type PageProgress,
  type PageRequestOptions,
} from './pagefetcher.js';
export { PageCache, type PageCacheStats } from './pagecache.js';
export { DEFAULT_PEER_TIMEOUTS, describeTimeout, missedDeadline, type PeerTimeouts } from './timeouts.js';
export { HedgePolicy, parseHedge, DEFAULT_HEDGE, HEDGE_DEFAULTS, type HedgeSetting, type HedgePolicyOptions } from './hedge.js';
export { LatencyTracker, type LatencyTrackerOptions } from './latency.js';
export { WorkerHealth, type WorkerHealthOptions } from './health.js';
export { HttpPageReporter, REPORT_ROUTE, type PageReporter, type HttpPageReporterOptions, type ReportResult } from './report.js';
