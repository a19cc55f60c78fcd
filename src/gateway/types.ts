import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DirEntry, FileInfo } from '../core/types.js';
import type { Credential } from './auth.js';

/** The `gateway:` section of a worker's configuration (defaults live in lib/config). */
export interface GatewayConfig {
  /** host:port; the gateway is off when absent. */
  listen?: string;
  region: string;
  credentials: Credential[];
  anonymous: boolean;
}

/**
 * What the gateway needs of its worker: the mounts (buckets), cached stat and list answers, and
 * the cluster read path. Reads go through the worker's ClusterReader, like /v1/data, so pages
 * come from their ring owners with single flight and checksums, and nothing buffers a whole
 * object.
 */
export interface GatewayBackend {
  mountNames(): string[];
  /** Cached (the worker's stat TTL). Throws FanoutError NOT_FOUND, IS_A_DIRECTORY, UNKNOWN_MOUNT… */
  stat(mount: string, path: string): Promise<FileInfo>;
  /** One directory level, cached. `signal`: the asking client left (a listing nobody waits for is stopped). */
  list(mount: string, dir: string, signal?: AbortSignal): Promise<DirEntry[]>;
  /** Bytes [start, end) of the file at exactly file.version. */
  read(mount: string, file: FileInfo, start: number, end: number, signal: AbortSignal): AsyncGenerator<Buffer>;
  /** Told when a chunk from read() has been written out, so its buffer can be reused. */
  written?(chunk: Buffer): void;
  /** A client that takes no byte of read()'s chunks for this long is cut off (the worker's clientIdle). */
  clientIdleMs?: number;
  /**
   * Sends bytes [start, end) on `res` itself (the worker: stored pages by the kernel), calling
   * writeHead before the first byte; resolves false, having written nothing, when it cannot for
   * this response (TLS, no sendfile), and read() is used instead.
   */
  send?(res: ServerResponse, mount: string, file: FileInfo, start: number, end: number, signal: AbortSignal, writeHead: () => void): Promise<boolean>;
}

/** One request, parsed once. */
export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  /** "" for the service (ListBuckets). */
  bucket: string;
  /** "" for bucket operations. */
  key: string;
  /** Decoded query parameters (first value of each name). */
  query: Map<string, string>;
  /** Whether the request carried no credentials (the gateway's `anonymous` reads). */
  anonymous?: boolean;
  /** The gateway's clock when the request came (epoch ms). */
  now: number;
}
