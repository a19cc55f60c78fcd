import type { IncomingHttpHeaders } from 'node:http';
import { FanoutError } from '../core/errors.js';
import { parseRange, type ByteRange } from '../lib/http/index.js';
import { s3Errors } from './errors.js';

/**
 * Conditional GET/HEAD (RFC 7232 as S3 applies it) and the Range decision.
 *   If-Match fails → 412; else If-Unmodified-Since fails → 412 (ignored when If-Match is given).
 *   If-None-Match matches → 304; else If-Modified-Since not modified → 304 (ignored with If-None-Match).
 * Dates compare at whole seconds, as HTTP dates carry no more.
 */
export type Conditional = 'ok' | 'not-modified';

export function evaluateConditions(headers: IncomingHttpHeaders, version: string, mtimeMs: number): Conditional {
  const ifMatch = headers['if-match'];
  const ifNoneMatch = headers['if-none-match'];
  const mtime = Math.floor(mtimeMs / 1000);
  if (ifMatch !== undefined) {
    if (!etagListMatches(ifMatch, version)) throw s3Errors.preconditionFailed('If-Match');
  } else {
    const since = httpDateSeconds(headers['if-unmodified-since']);
    if (since !== undefined && mtime > since) throw s3Errors.preconditionFailed('If-Unmodified-Since');
  }
  if (ifNoneMatch !== undefined) {
    if (etagListMatches(ifNoneMatch, version)) return 'not-modified';
  } else {
    const since = httpDateSeconds(headers['if-modified-since']);
    if (since !== undefined && mtime <= since) return 'not-modified';
  }
  return 'ok';
}

/** "*" or a comma-separated list of (possibly weak) quoted ETags. */
export function etagListMatches(header: string, version: string): boolean {
  return header.split(',').some((raw) => {
    const tag = raw.trim();
    return tag === '*' || unquote(tag) === version;
  });
}

function unquote(tag: string): string {
  return tag.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

function httpDateSeconds(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
}

/**
 * The byte range to serve, or undefined for the whole object. Like S3, a Range header that does
 * not parse (or asks for several ranges) is ignored; one that lies outside the object is
 * InvalidRange (416). An If-Range that no longer matches also means the whole object.
 */
export function selectRange(headers: IncomingHttpHeaders, size: number, version: string, mtimeMs: number): ByteRange | undefined {
  const header = headers.range;
  if (header === undefined) return undefined;
  const raw = headers['if-range'];
  const ifRange = Array.isArray(raw) ? raw[0] : raw;
  if (ifRange !== undefined) {
    const isEtag = ifRange.startsWith('"') || ifRange.startsWith('W/');
    const holds = isEtag ? !ifRange.startsWith('W/') && unquote(ifRange) === version : httpDateSeconds(ifRange) === Math.floor(mtimeMs / 1000);
    if (!holds) return undefined;
  }
  try {
    return parseRange(header, size);
  } catch (err) {
    if (err instanceof FanoutError && err.code === 'RANGE_NOT_SATISFIABLE') throw s3Errors.invalidRange(size, header.slice(0, 200));
    if (err instanceof FanoutError && err.code === 'INVALID_RANGE') return undefined;
    throw err;
  }
}
