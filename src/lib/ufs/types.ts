import type { Readable } from 'node:stream';
import type { DirEntry, FileInfo, PageRef } from '../../core/types.js';

/**
 * The whole contract with a source (UFS): a handful of methods. Paths are relative to the
 * mount root, already validated ("" is the root). Implementations translate their backend's
 * errors into FanoutError codes: NOT_FOUND, NOT_A_DIRECTORY, IS_A_DIRECTORY, SOURCE_CHANGED,
 * SOURCE_ERROR, ABORTED.
 */
export interface Ufs {
  /** Stats a file. A directory (or S3 prefix) is IS_A_DIRECTORY; a missing path NOT_FOUND. */
  stat(path: string, signal?: AbortSignal): Promise<FileInfo>;
  /**
   * Lists one level below a directory (S3: delimiter "/"), sorted by name. Entries the listing
   * cannot give as a file or directory (options.onSkipped) are told there, once each, if the
   * source can tell them: a publisher must not take a listing without them for the whole tree.
   */
  list(dir: string, signal?: AbortSignal, options?: ListOptions): Promise<DirEntry[]>;
  /**
   * Streams bytes [offset, offset+length) of the file at exactly `version`. If the file is no
   * longer at that version the stream errors with SOURCE_CHANGED (never bytes of another
   * version); a short read errors with SOURCE_TRUNCATED.
   */
  read(path: string, version: string, offset: number, length: number, signal?: AbortSignal): Readable;
  /**
   * Optional, for sources that are paged themselves (another fanout cluster, fanout.ts): page
   * `ref.index` of `pageSize`-byte pages, whole, at exactly `ref.version`, checked against the
   * source's own page checksum, and asked for by content when `ref.hash` is set. Same errors as read.
   */
  readPage?(ref: PageRef, pageSize: number, signal?: AbortSignal): AsyncIterable<Buffer>;
  /**
   * Optional, for small whole reads (a directory source with the small-file addon): bytes
   * [offset, offset + into.length) of the file at exactly `version`, into `into`, in one step
   * instead of a stream. `size` is the file's size the caller was told: a file at `version` of
   * another size fails with INVALID_ARGUMENT, before any byte is read (both are checked on the
   * open file, so the caller needs no stat first). Otherwise the same errors as read. If it
   * rejects, `into` may still be written by a read that outlived its deadline or abort: do not
   * reuse it. With `sha256`, resolves with the hex SHA-256 of the bytes read where the source can
   * compute it beside the read (undefined otherwise: the caller hashes them itself).
   */
  readInto?(path: string, version: string, size: number, offset: number, into: Buffer, signal?: AbortSignal, options?: { sha256?: boolean }): Promise<string | undefined>;
  close?(): Promise<void>;
  /**
   * Creates a small file that must not exist yet (release manifests), atomically: readers see
   * all of it or nothing. ALREADY_EXISTS if the path is taken. Optional: read-only sources lack it.
   */
  writeExclusive?(path: string, data: Buffer, signal?: AbortSignal): Promise<void>;
}

/**
 * Why a listing left an entry out: its name is not UTF-8 (no key can carry it), a symlink that
 * leads nowhere or out of the source, or something that is neither file nor directory (FIFO,
 * socket, device). A directory met again round a loop is not one: its tree is listed already.
 */
export type SkipReason = 'not-utf8' | 'dangling-link' | 'link-outside' | 'special-file';

export interface SkippedEntry {
  /** The entry's name; bytes that are not UTF-8 written as \xNN. */
  name: string;
  reason: SkipReason;
}

export interface ListOptions {
  onSkipped?: (entry: SkippedEntry) => void;
}

export interface S3SourceOptions {
  endpoint?: string;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Path-style addressing (http://host/bucket/key), needed by most S3-compatible servers. */
  forcePathStyle?: boolean;
}

/**
 * How a source without strong validators is read. 'strict' (the default for HTTP sources)
 * refuses a file that has no strong ETag with SOURCE_UNVERSIONED: size + Last-Modified (whole
 * seconds) cannot tell two files apart that were written in the same second with the same size,
 * so pages of both could mix. 'weak' accepts size + Last-Modified as the version, with that risk.
 */
export type Versioning = 'strict' | 'weak';

/** Deadlines of every source request, in milliseconds (0 = none). See deadlines.ts. */
export interface SourceDeadlines {
  /** Establishing a connection (TCP + TLS). */
  connectMs: number;
  /** From sending a request to the first byte of the answer (headers; for reads, the first body chunk). */
  firstByteMs: number;
  /** While a body streams: a window in which the source must make progress (see deadlines.ts). */
  idleMs: number;
  /** A whole listing of one directory, every page together (S3: a server may hand out new pages for ever). */
  listMs: number;
}

/** What a mount tells its source beyond the URI. */
export interface SourceOptions {
  /**
   * How error messages name a file: the mount path ("/data"), so that "/data/missing.bin" is
   * what users read, never the server's directory or the origin's URL. Default: the URI.
   */
  label?: string;
  versioning?: Versioning;
  deadlines?: Partial<SourceDeadlines>;
  /** Entries one listing may gather (S3: keys and common prefixes of every page); 0 = no bound. Default s3listing.ts. */
  maxListEntries?: number;
  /** For fanout:// sources: the reading cluster's facts and the credentials for the remote one. */
  cluster?: RemoteSourceOptions;
}

/** How a cluster reads another (fanout.ts). */
export interface RemoteSourceOptions {
  /** The reading cluster's id: sent on every request (the remote refuses its own id: a loop). */
  clusterId?: string;
  /** The reading cluster's page size: the remote's must be the same (checked at start). */
  pageSize?: number;
  /** Bearer token for the remote cluster (default: FANOUT_TOKEN, as any client). */
  token?: string;
  /** CA bundle (PEM file) trusted for an https remote (default: FANOUT_CA, else the system's). */
  ca?: string;
}
