import { FanoutClient, type ClusterInfo, type SizedPageReader } from '../../client/index.js';
import type { DirEntry, FileInfo } from '../../core/types.js';
import { HEADERS } from '../wire/index.js';
import type { RemoteSourceOptions, SourceDeadlines } from './types.js';

/**
 * What a fanout:// source needs of the remote cluster, and the one module that uses the SDK for
 * it: everything goes through FanoutClient's public API (members, ring, hedging, checksums), so
 * a change of the SDK's internals carries over to cluster-over-cluster reads.
 */
export interface RemoteCluster {
  /** The remote's /v1/cluster, refreshed at most every 10 s unless `force`. */
  info(force?: boolean): Promise<ClusterInfo>;
  /** `path` is a fanout path: "/MOUNT/PATH". */
  stat(path: string): Promise<FileInfo>;
  list(path: string): Promise<DirEntry[]>;
  /**
   * Page `index` of `file` at its version (by content with `hash`) in pages of `pageSize` (the
   * remote's, as the caller last learnt it: refused with PAGE_SIZE_MISMATCH once it is another),
   * verified against the remote's CRC32.
   */
  page(mount: string, file: FileInfo, index: number, hash: string | undefined, pageSize: number, signal?: AbortSignal): Promise<Buffer[]>;
  close(): Promise<void>;
}

export function connectRemote(endpoints: string[], options: RemoteSourceOptions, deadlines: Partial<SourceDeadlines>): RemoteCluster {
  const timeouts = {
    // 0 means "no deadline" for sources; the SDK always has one, so 0 keeps its default.
    connectMs: deadlines.connectMs || undefined,
    firstByteMs: deadlines.firstByteMs || undefined,
    idleMs: deadlines.idleMs || undefined,
  };
  const client = new FanoutClient({
    endpoint: endpoints,
    token: options.token,
    ca: options.ca,
    timeouts,
    // Only whole pages are fetched (fetchPage), never through readPage's shared cache.
    pageCacheBytes: 0,
    // A hedge would send a slow page over the line a second time; a failing worker is still
    // skipped for the next one (the SDK's fallback), which costs no second copy.
    hedge: 'off',
    headers: options.clusterId ? { [HEADERS.via]: options.clusterId } : undefined,
  });
  // An index means nothing without its page size: a reader per size asked in, never the SDK's size of the moment.
  const readers = new Map<number, SizedPageReader>();
  const readerOf = (pageSize: number) => {
    let reader = readers.get(pageSize);
    if (!reader) readers.set(pageSize, (reader = client.pageReader(pageSize)));
    return reader;
  };
  return {
    info: (force) => client.cluster(force),
    stat: (path) => client.stat(path),
    list: (path) => client.list(path),
    page: (mount, file, index, hash, pageSize, signal) => readerOf(pageSize).fetchPage({ ...file, mount }, index, signal, hash),
    close: () => client.close(),
  };
}
