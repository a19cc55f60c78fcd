import type { Readable } from 'node:stream';
import type { FanoutError } from '../../core/errors.js';
import type { FileInfo } from '../../core/types.js';
import { sourceStream, type OpenedSource } from './stream.js';
import type { SourceDeadlines } from './types.js';
import { assertVersion, checkPath, checkRange } from './util.js';

/** One range read of a networked source, and how that source stats, maps errors and opens a range. */
export interface RemoteRangeRead {
  path: string;
  version: string;
  offset: number;
  length: number;
  signal?: AbortSignal;
  /** The file as error messages name it ("s3://bucket/key"). */
  what: string;
  deadlines: SourceDeadlines;
  stat: (path: string, signal?: AbortSignal) => Promise<FileInfo>;
  /** `body`: bytes received of the range once its body opened (a cut body is SOURCE_TRUNCATED). */
  mapError: (err: unknown, body?: { received: number; length: number }) => FanoutError;
  /** Sends the request for a non-empty, checked range and validates its answer. */
  openRange: (signal: AbortSignal) => Promise<OpenedSource>;
}

/**
 * A range read of an HTTP or S3 source: both read under the source's first-byte and idle
 * deadlines, check the path and range before anything is sent, and answer an empty range with a
 * version check by stat (neither protocol can ask for zero bytes). What differs, the request and
 * the checks of its answer, is each adapter's openRange.
 */
export function remoteRangeStream(read: RemoteRangeRead): Readable {
  const { path, version, offset, length, signal, what } = read;
  return sourceStream({
    expected: length,
    what,
    signal,
    firstByteMs: read.deadlines.firstByteMs,
    idleMs: read.deadlines.idleMs,
    mapError: (err, received) => read.mapError(err, received === undefined ? undefined : { received, length }),
    open: async (streamSignal) => {
      checkPath(path);
      checkRange(offset, length);
      if (length === 0) {
        await assertVersion(read.stat, path, version, what, streamSignal);
        return { body: null };
      }
      return read.openRange(streamSignal);
    },
  });
}
