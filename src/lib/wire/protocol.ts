import { encodeUrlPath } from '../../core/paths.js';
import type { PageRef } from '../../core/types.js';

/**
 * The worker's HTTP contract, named once for both sides (the worker's routes, the SDK, the CLI,
 * the workers' own peer requests). Bodies are in schemas.ts.
 */
export const ROUTES = {
  /** Liveness: 200 while the process serves HTTP. */
  health: '/healthz',
  /** Readiness: 503 while the worker is in no ring (starting, or its id held by another worker). */
  ready: '/readyz',
  metrics: '/metrics',
  /** GET: members, page size, mounts (ClusterInfo). */
  cluster: '/v1/cluster',
  /** GET: this worker's counters (WorkerStatus). */
  status: '/v1/status',
  /** GET /v1/stat/MOUNT/PATH: FileInfo. */
  stat: '/v1/stat',
  /** GET /v1/list/MOUNT/DIR: one directory level; /v1/list/ lists the mounts. */
  list: '/v1/list',
  /** GET /v1/page/MOUNT/PATH?v&size&i[&h]: one page of one version. */
  page: '/v1/page',
  /** POST {items: PageRef[]}: many whole small pages in one framed answer (batch.ts). */
  pages: '/v1/pages',
  /** GET|HEAD /v1/data/MOUNT/PATH with Range: bytes through the cluster. */
  data: '/v1/data',
  /** POST JSON bodies (schemas.ts); GET /v1/admin/policy. */
  admin: '/v1/admin',
  adminLoad: '/v1/admin/load',
  adminPin: '/v1/admin/pin',
  adminUnpin: '/v1/admin/unpin',
  adminFree: '/v1/admin/free',
  adminTtl: '/v1/admin/ttl',
  adminPolicy: '/v1/admin/policy',
  /** GET ?line&member&seq&epoch&read&preload&applied: renew a share of a line at its coordinator. Peers only. */
  linesRenew: '/v1/lines/renew',
} as const;

/** Query parameters of a page request. */
export const PAGE_QUERY = {
  /** The file's version (ETag or size-mtime): pages belong to one version. */
  version: 'v',
  /** The file's size at that version. */
  size: 'size',
  /** The page's index. */
  index: 'i',
  /** SHA-256 of the page's content, when known (release manifests): placed and stored by content. */
  hash: 'h',
  /**
   * The page size the reader counts pages in: a worker with another one refuses the request
   * (PAGE_SIZE_MISMATCH) rather than answer another span of the file under the same index.
   * Optional, for curl and readers of earlier builds.
   */
  pageSize: 'ps',
} as const;

export const HEADERS = {
  /** CRC32 (hex) of a page: a header for a cached page, a trailer for one streamed as it arrives. */
  checksum: 'x-fanout-crc32',
  /** An error's code: on error answers, and as a trailer of a page whose source read failed mid-stream. */
  error: 'x-fanout-error',
  /** The message of an error trailer, URI-encoded. */
  errorMessage: 'x-fanout-error-message',
  /** A peer's request not to be forwarded again (loop guard) or for a direct source read. Peers only. */
  direct: 'x-fanout-direct',
  /** The cluster credential between workers (lib/auth/peer). */
  peer: 'x-fanout-peer',
  /** "preload" on page requests of `fanout load` and sync prefetch: they take what reads leave of a line. */
  trafficClass: 'x-fanout-class',
  /**
   * A page request's wish to be told at once, by a 102 Processing head, when the page is not
   * stored and is being filled (its bytes follow as the source delivers them): the reader then
   * knows the worker is alive and no hedge elsewhere would be faster. Opt-in, so curl and
   * other clients see plain answers.
   */
  progress: 'x-fanout-progress',
  /** "hit" or "miss": how the worker answered a page (for operators and tests). */
  cache: 'x-fanout-cache',
  /**
   * Cluster ids a source read came through (a cluster reading another as its source, lib/ufs/fanout.ts):
   * a worker refuses a request that carries its own cluster's id (a loop).
   */
  via: 'x-fanout-via',
} as const;

/** The request path of one page of one version, counted in pages of `pageSize` bytes when given. */
export function pagePath(ref: PageRef, pageSize?: number): string {
  const q = PAGE_QUERY;
  const query =
    `${q.version}=${encodeURIComponent(ref.version)}&${q.size}=${ref.size}&${q.index}=${ref.index}` +
    (ref.hash ? `&${q.hash}=${ref.hash}` : '') +
    (pageSize ? `&${q.pageSize}=${pageSize}` : '');
  return `${ROUTES.page}/${encodeUrlPath(ref.mount)}/${encodeUrlPath(ref.path)}?${query}`;
}

/** "/v1/stat/MOUNT/PATH" and the like, for routes that take a fanout path. */
export function pathRoute(route: typeof ROUTES.stat | typeof ROUTES.list | typeof ROUTES.data, mount: string, path: string): string {
  return `${route}/${encodeUrlPath(mount)}/${encodeUrlPath(path)}`;
}
