import type { FileInfo } from '../../core/types.js';
import { FanoutError } from '../../core/errors.js';

/**
 * Callers validate paths already (core/paths.ts); adapters check again because a path that
 * slips through here becomes a file name or an object key on the source.
 */
export function checkPath(path: string): void {
  if (path === '') return;
  const bad =
    typeof path !== 'string' ||
    path.startsWith('/') ||
    path.includes('\0') ||
    path.split('/').some((s) => s === '' || s === '.' || s === '..');
  if (bad) throw new FanoutError('INVALID_PATH', `invalid source path ${JSON.stringify(path)}`);
}

/**
 * A size a source gives, checked before it is used: past 2^53 a number is no longer whole (a HEAD
 * saying 9007199254740993 became 9007199254740992), and every read of the file then failed with a
 * peer request's "size must be a non-negative integer", a parameter the client never sent.
 */
export function addressableSize(size: number, what: string, said: string = String(size)): number {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new FanoutError('SOURCE_ERROR', `${what}: the source gives a size of ${said.slice(0, 40)} bytes, which fanout cannot read (at most 2^53-1)`);
  }
  return size;
}

export function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new FanoutError('INVALID_RANGE', `invalid range: offset ${offset}, length ${length}`);
  }
}

/** The version of a source without ETags: size and whole-millisecond mtime. */
export function sizeMtimeVersion(size: number, mtimeMs: number): string {
  return `${size}-${Math.floor(mtimeMs)}`;
}

/** Whether `version` has sizeMtimeVersion's form: a file the source gave no strong ETag for, which If-Match cannot name. */
export function isSizeMtimeVersion(version: string): boolean {
  return /^\d+-\d+$/.test(version);
}

export function changed(what: string, version: string, now?: string): FanoutError {
  const found = now ? `, it is now at ${now}` : '';
  return new FanoutError('SOURCE_CHANGED', `${what} is no longer at version ${version}${found}`);
}

/**
 * An empty read has no bytes to carry a precondition (S3 and HTTP cannot express an empty
 * range), yet the version must still hold: check it with a stat.
 */
export async function assertVersion(
  stat: (path: string, signal?: AbortSignal) => Promise<FileInfo>,
  path: string,
  version: string,
  what: string,
  signal?: AbortSignal,
): Promise<void> {
  const info = await stat(path, signal);
  if (info.version !== version) throw changed(what, version, info.version);
}

/** Node/undici/AWS abort errors all look different; this recognizes each of them. */
export function isAbortLike(err: unknown): boolean {
  const e = err as { name?: string; code?: string } | null;
  return e?.name === 'AbortError' || e?.code === 'ABORT_ERR' || e?.code === 'UND_ERR_ABORTED';
}

/**
 * Destroys a body we give up on. A destroyed undici body (or socket) emits 'error'
 * (RequestAbortedError); with no listener that error kills the process, so one is added first.
 */
export function destroyQuietly(stream: { on(event: 'error', fn: () => void): unknown; destroy(): unknown; destroyed?: boolean }): void {
  stream.on('error', () => {});
  if (!stream.destroyed) stream.destroy();
}
