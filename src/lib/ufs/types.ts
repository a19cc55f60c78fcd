import type { Readable } from 'node:stream';
import type { DirEntry, FileInfo } from '../../core/types.js';

/**
 * The whole contract with a source (UFS): a handful of methods. Paths are relative to the
 * mount root, already validated ("" is the root). Implementations translate their backend's
 * errors into FanoutError codes: NOT_FOUND, NOT_A_DIRECTORY, IS_A_DIRECTORY, SOURCE_CHANGED,
 * SOURCE_ERROR, ABORTED.
 */
export interface Ufs {
  /** Stats a file. A directory (or S3 prefix) is IS_A_DIRECTORY; a missing path NOT_FOUND. */
  stat(path: string, signal?: AbortSignal): Promise<FileInfo>;
  /** Lists one level below a directory (S3: delimiter "/"), sorted by name. */
  list(dir: string, signal?: AbortSignal): Promise<DirEntry[]>;
  /**
   * Streams bytes [offset, offset+length) of the file at exactly `version`. If the file is no
   * longer at that version the stream errors with SOURCE_CHANGED (never bytes of another
   * version); a short read errors with SOURCE_TRUNCATED.
   */
  read(path: string, version: string, offset: number, length: number, signal?: AbortSignal): Readable;
  close?(): Promise<void>;
  /**
   * Creates a small file that must not exist yet (release manifests), atomically: readers see
   * all of it or nothing. ALREADY_EXISTS if the path is taken. Optional: read-only sources lack it.
   */
  writeExclusive?(path: string, data: Buffer, signal?: AbortSignal): Promise<void>;
}

export interface S3SourceOptions {
  endpoint?: string;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Path-style addressing (http://host/bucket/key), needed by most S3-compatible servers. */
  forcePathStyle?: boolean;
}
