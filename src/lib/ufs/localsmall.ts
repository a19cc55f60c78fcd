import { FanoutError } from '../../core/errors.js';
import { INSIDE_CODES, errnoError, type SmallIo } from '../smallio/index.js';
import type { SourceCalls } from './fsgate.js';
import { mapFsError } from './local.js';
import { changed, checkRange, sizeMtimeVersion } from './util.js';

export interface InsideRead {
  /** The file under the real root (not resolved: the addon resolves it on an O_PATH fd). */
  path: string;
  realRoot: string;
  /** How errors name the file. */
  what: string;
  version: string;
  /** The size the caller was told: another size at this version is INVALID_ARGUMENT. */
  size: number;
  offset: number;
  into: Buffer;
  signal?: AbortSignal;
  /** The source's first-byte deadline (0 = none): a read that gives no answer by then fails. */
  deadlineMs: number;
  /** The source's share of the thread pool (fsgate.ts). */
  calls: SourceCalls;
  /** Also hash the bytes read (SHA-256, on the pool thread): the result is its hex, when the addon could. */
  sha256?: boolean;
}

/**
 * A small range of a directory source's file in one thread-pool job (native/smallio): the same
 * rules as LocalUfs.read (nothing outside the real root is opened, a FIFO never blocks, the
 * version is checked on the open file before and after the bytes are read), without the stream,
 * the FileHandles and the eight hand-offs. A version that is not size-mtime cannot be this
 * source's: SOURCE_CHANGED without a read, as the stream's check would say after its fstat.
 */
export async function readInsideRoot(io: SmallIo, read: InsideRead): Promise<string | undefined> {
  const { what, version, offset, into } = read;
  checkRange(offset, into.length);
  const expected = /^(\d+)-(\d+)$/.exec(version);
  if (!expected) throw changed(what, version);
  const atVersion = { size: Number(expected[1]), mtimeMs: Number(expected[2]) };
  if (atVersion.size !== read.size) {
    // No byte is read: the open file only tells which of the two the caller has wrong.
    await readChecked(io, { ...read, into: into.subarray(0, 0) }, atVersion);
    throw new FanoutError('INVALID_ARGUMENT', `size=${read.size} is not the size of ${what} at this version`);
  }
  return readChecked(io, read, atVersion);
}

async function readChecked(io: SmallIo, read: InsideRead, atVersion: { size: number; mtimeMs: number }): Promise<string | undefined> {
  const { what, version, offset, into } = read;
  const result = await read.calls.run(what, read.deadlineMs, read.signal, () => io.readInside(read.path, read.realRoot, offset, into, atVersion, { sha256: read.sha256 }));
  const now = result.before ? sizeMtimeVersion(result.before.size, result.before.mtimeMs) : undefined;
  switch (result.code) {
    case 0:
      break;
    case INSIDE_CODES.outside:
      throw new FanoutError('INVALID_PATH', `${what} resolves outside the source root`);
    case INSIDE_CODES.isDirectory:
      throw new FanoutError('IS_A_DIRECTORY', `${what} is a directory`);
    case INSIDE_CODES.notAFile:
      throw new FanoutError('NOT_FOUND', `${what} is not a regular file`);
    case INSIDE_CODES.changed:
      throw changed(what, version, now);
    case INSIDE_CODES.pastEnd:
      throw new FanoutError('RANGE_NOT_SATISFIABLE', `${what}: offset ${offset} is past its ${result.before?.size ?? 0} bytes`);
    default:
      throw mapFsError(errnoError(result.code, 'read', what), what);
  }
  if (!('after' in result)) throw new FanoutError('INTERNAL', `${what}: read gave no result`);
  if (result.bytesRead < into.length) {
    throw new FanoutError('SOURCE_TRUNCATED', `${what}: the source ended after ${result.bytesRead} of ${into.length} bytes`);
  }
  const after = sizeMtimeVersion(result.after.size, result.after.mtimeMs);
  if (after !== version) throw changed(`${what} (modified while being read)`, version, after);
  return result.sha256;
}
