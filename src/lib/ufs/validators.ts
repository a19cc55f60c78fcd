import type { IncomingHttpHeaders } from 'node:http';
import { FanoutError } from '../../core/errors.js';
import type { FileInfo } from '../../core/types.js';
import type { Versioning } from './types.js';
import { changed, sizeMtimeVersion } from './util.js';

/**
 * The validators of HTTP answers, pure so that every rule is unit-tested: what version a
 * response describes, and whether a range answer carries exactly the bytes asked for, of
 * exactly the version being read. Any doubt is an error: a wrong page stored under a version's
 * key would be served to every reader of that version until evicted.
 */

export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** "bytes 0-0/1234" or "bytes *\/1234" → 1234. */
export function rangeTotal(headers: IncomingHttpHeaders): number | undefined {
  const total = /\/(\d+)\s*$/.exec(header(headers, 'content-range') ?? '')?.[1];
  return total === undefined ? undefined : Number(total);
}

/** The strong ETag without quotes; undefined for none or a weak one (W/"..."), which promises equivalent content, not identical bytes. */
export function strongEtag(headers: IncomingHttpHeaders): string | undefined {
  const etag = header(headers, 'etag');
  if (!etag || etag.startsWith('W/')) return undefined;
  return /^"(.*)"$/.exec(etag)?.[1] ?? etag;
}

/** Size, mtime and version from response headers; the same rules for stat and read. */
export function describeVersion(headers: IncomingHttpHeaders, size: number): Omit<FileInfo, 'path'> & { strong: boolean } {
  const modified = Date.parse(header(headers, 'last-modified') ?? '');
  const mtimeMs = Number.isNaN(modified) ? 0 : modified;
  const etag = strongEtag(headers);
  return { size, mtimeMs, version: etag || sizeMtimeVersion(size, mtimeMs), strong: Boolean(etag) };
}

/** The error a strict mount gives for a file without a strong ETag. */
export function unversioned(what: string, label: string | undefined, headers: IncomingHttpHeaders): FanoutError {
  const etag = header(headers, 'etag');
  const has = etag ? `only a weak ETag (${etag})` : 'no ETag';
  const mount = label ? ` on mount ${label}` : '';
  return new FanoutError(
    'SOURCE_UNVERSIONED',
    `${what}: the source sends ${has}, so fanout cannot tell two versions of the same size and Last-Modified second apart, ` +
      `and versioning is strict. Set "versioning: weak"${mount} to read it by size and Last-Modified (pages of two such versions could then mix), ` +
      `or make the server send strong ETags.`,
  );
}

export interface RangeAsk {
  offset: number;
  length: number;
  version: string;
  versioning: Versioning;
  /** Size of `version` when a stat saw it: a Content-Range total that differs means another file. */
  knownSize?: number;
  /** Names the file in messages ("/web/f.bin"). */
  what: string;
  label?: string;
}

/**
 * Checks a 200/206 answer to `Range: bytes=offset-(offset+length-1)` (and If-Match). Returns
 * null when the body is exactly the bytes asked for, of the version asked for; else the error:
 *   SOURCE_UNVERSIONED  strict mount, the answer has no strong ETag
 *   SOURCE_CHANGED      the answer's version (ETag, or size + Last-Modified) or total size differs
 *   SOURCE_ERROR        the server ignored Range (200 with more than the range), or answered another range
 * A 200 is never cut down to the range: skipping to the offset would read `offset` bytes per
 * page, O(n²) source traffic for a file of n pages (128 GiB for a 1 GiB file of 4 MiB pages),
 * the very amplification a cache exists to prevent. Such origins must be fixed, not tolerated.
 */
export function checkRangeAnswer(status: number, headers: IncomingHttpHeaders, ask: RangeAsk): FanoutError | null {
  const { offset, length, version, what } = ask;
  const size = status === 206 ? rangeTotal(headers) : numberHeader(headers, 'content-length');
  if (size === undefined) {
    return new FanoutError('SOURCE_ERROR', `${what}: the source's answer gives no total size (Content-Range "${header(headers, 'content-range') ?? ''}")`);
  }
  const now = describeVersion(headers, size);
  if (ask.versioning === 'strict' && !now.strong) return unversioned(what, ask.label, headers);
  if (now.version !== version) return changed(what, version, now.version);
  if (ask.knownSize !== undefined && ask.knownSize !== size) {
    return new FanoutError('SOURCE_CHANGED', `${what}: version ${version} had ${ask.knownSize} bytes, the source now says ${size}`);
  }
  if (status === 200) {
    if (offset === 0 && size === length) return null;
    return new FanoutError(
      'SOURCE_ERROR',
      `${what}: the source ignores Range requests (HTTP 200 with all ${size} bytes for bytes ${offset}-${offset + length - 1}); fanout reads files by range and needs a server that supports it`,
    );
  }
  // Range units are case-insensitive (RFC 9110 14.1): "Bytes 100-149/1000" is a byte range too.
  const range = /^bytes (\d+)-(\d+)\//i.exec(header(headers, 'content-range') ?? '');
  if (range && Number(range[1]) === offset && Number(range[2]) === size - 1 && size < offset + length) {
    // Same version, and the file simply ends before the range does: the caller asked past its end.
    return new FanoutError('SOURCE_TRUNCATED', `${what}: has ${size} bytes, fewer than the ${offset + length} asked for`);
  }
  if (!range || Number(range[1]) !== offset || Number(range[2]) !== offset + length - 1) {
    return new FanoutError('SOURCE_ERROR', `${what}: asked for bytes ${offset}-${offset + length - 1}, got "${header(headers, 'content-range') ?? ''}"`);
  }
  const contentLength = numberHeader(headers, 'content-length');
  if (contentLength !== undefined && contentLength !== length) {
    return new FanoutError('SOURCE_ERROR', `${what}: Content-Length ${contentLength} for a range of ${length} bytes`);
  }
  return null;
}

/**
 * The error for a 416 answer to a range read (`total`: the size its Content-Range or error body
 * gives, if any). A range past the end the caller asked for is RANGE_NOT_SATISFIABLE. But fanout
 * asks for bytes inside the size a stat of the version saw, so a 416 for those says the file
 * shrank (SOURCE_CHANGED), or that the source refuses bytes it has (SOURCE_ERROR): passed on as
 * 416, clients were told they had asked past the end of a file they had read correctly, and S3
 * clients do not retry an InvalidRange.
 */
export function refusedRange(total: number | undefined, ask: Pick<RangeAsk, 'offset' | 'length' | 'version' | 'knownSize' | 'what'>): FanoutError {
  const { offset, length, version, knownSize, what } = ask;
  const asked = `bytes ${offset}-${offset + length - 1}`;
  if (knownSize === undefined || offset >= knownSize) {
    if (total !== undefined && total > offset) {
      return new FanoutError('SOURCE_ERROR', `${what}: the source refused ${asked} (HTTP 416) of a file it says has ${total} bytes`);
    }
    return new FanoutError('RANGE_NOT_SATISFIABLE', `${what}: the range starts past the end of the file`);
  }
  if (total !== undefined && total !== knownSize) {
    return new FanoutError('SOURCE_CHANGED', `${what}: version ${version} had ${knownSize} bytes, the source now says ${total}`);
  }
  return new FanoutError('SOURCE_ERROR', `${what}: the source refused ${asked} (HTTP 416) of version ${version}, which has ${knownSize} bytes`);
}

function numberHeader(headers: IncomingHttpHeaders, name: string): number | undefined {
  const raw = header(headers, name);
  if (raw === undefined || !/^\d+$/.test(raw.trim())) return undefined;
  return Number(raw);
}

/** An answer's content coding: lowercased, '' for none or identity ("gzip", "gzip, br"). */
export function contentCoding(headers: IncomingHttpHeaders): string {
  const raw = header(headers, 'content-encoding') ?? '';
  return raw
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity')
    .join(', ')
    .slice(0, 64);
}

/**
 * The error for a range answer in another content coding than the stat of its version saw.
 * Every request asks for the file as stored (Accept-Encoding: identity); a file stored
 * compressed comes with its coding on HEAD and GET alike and is read as stored. A coding on the
 * range answer only is a proxy or CDN compressing against the request: its sizes, ETag and
 * ranges are those of the compressed form, which fanout reported as SOURCE_CHANGED (the
 * compressed form's ETag or size differs), sending users after a change that never happened.
 */
export function codingMismatch(what: string, answered: string, statSaw: string): FanoutError {
  const fix =
    'A proxy or CDN in front of the origin compresses against the request: its sizes, ranges and bytes are those of the compressed form, not of the file. ' +
    'Turn its compression off for these requests (at least for Accept-Encoding: identity), or point the mount at the origin itself';
  const detail =
    statSaw === ''
      ? `the source answered a range read with Content-Encoding: ${answered} although fanout asked for the file as stored (Accept-Encoding: identity), and its HEAD gave the file with no coding`
      : `the source's HEAD gave the file with Content-Encoding: ${statSaw}, a range read of it ${answered === '' ? 'with no coding' : `with Content-Encoding: ${answered}`} (fanout asks for the file as stored, Accept-Encoding: identity)`;
  return new FanoutError('SOURCE_ERROR', `${what}: ${detail}. ${fix}`);
}
