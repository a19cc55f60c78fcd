import { FanoutError } from '../core/errors.js';
import { parseFanoutPath } from '../core/paths.js';
import type { FileInfo } from '../core/types.js';
import { s3Errors, toS3Error } from './errors.js';
import type { GatewayBackend } from './types.js';

/**
 * Directories as S3 clients expect them. S3 has no directories: tools that show a bucket as a
 * filesystem (s3fs, rclone, consoles) mark one with a zero-byte object "dir/" of type
 * application/x-directory. A filesystem source has real directories, so the gateway answers
 * for those markers itself: HEAD or GET of "dir/" is such an object for every directory (s3fs
 * probes "dir/" to decide that a name is a directory: without it an empty one shows as
 * `??????????` and cannot be entered), and a listing holds "dir/" for an empty directory, the one
 * kind no key below reveals (rclone's recursive listings and copies then keep it).
 */

export const DIRECTORY_CONTENT_TYPE = 'application/x-directory';
/** The MD5 of no bytes: the ETag S3 gives every empty object, markers included. */
export const EMPTY_ETAG = 'd41d8cd98f00b204e9800998ecf8427e';

/** A key naming a directory marker ("models/v1/"), not a file. */
export function isMarkerKey(key: string): boolean {
  return key.endsWith('/');
}

/**
 * The zero-byte object standing for directory `key` ("a/b/"): NoSuchKey unless it is one. Its
 * Last-Modified is the directory's time, or `nowMs` where the source gives none (S3 prefixes):
 * never 1970, which s3fs shows as the directory's date.
 */
export async function statMarker(backend: GatewayBackend, bucket: string, key: string, nowMs: number): Promise<FileInfo> {
  const dir = key.slice(0, -1);
  let path: string;
  try {
    path = parseFanoutPath(`/${bucket}/${dir}`).path;
  } catch (err) {
    throw toS3Error(err, { bucket, key });
  }
  if (!path || path !== dir) throw s3Errors.noSuchKey(key); // "/", "a//", "./": never a directory of the source
  const slash = path.lastIndexOf('/');
  const parent = slash === -1 ? '' : path.slice(0, slash);
  const name = path.slice(slash + 1);
  const entries = await backend.list(bucket, parent).catch((err: unknown) => {
    // No such parent, or a source that cannot be listed (HTTP): no directory either.
    if (err instanceof FanoutError && ['NOT_FOUND', 'NOT_A_DIRECTORY', 'INVALID_PATH', 'NOT_LISTABLE'].includes(err.code)) return [];
    throw toS3Error(err, { bucket, key });
  });
  const entry = entries.find((e) => e.name === name && e.type === 'dir');
  if (!entry) throw s3Errors.noSuchKey(key);
  return { path: key, size: 0, mtimeMs: entry.mtimeMs ?? nowMs, version: EMPTY_ETAG };
}
