export { ClusterReader, type ClusterReaderOptions, type Placement, type SourceFallback } from './reader.js';
export { PageFetcher, CHECKSUM_HEADER } from './pagefetcher.js';
