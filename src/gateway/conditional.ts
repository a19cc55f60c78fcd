import type { IncomingHttpHeaders } from 'node:http';
import { FanoutError } from '../core/errors.js';
import { parseRange, type ByteRange } from '../lib/http/index.js';
import { s3Errors } from './errors.js';

/**
 * Conditional GET/HEAD (RFC 7232 as S3 applies it) and the Range decision.
 *   If-Match fails → 412; else If-Unmodified-Since fails → 412 (ignored when If-Match is given).
 *   If-None-Match matches → 304; else If-Modified-Since not modified → 304 (ignored with If-None-Match).
 * Dates compare at whole seconds, as HTTP dates carry no more. An If-Modified-Since later than the
 * gateway's clock (`nowMs`) is ignored, as S3 does: RFC 2616 (14.25) called such a date invalid;
 * RFC 9110 (13.1.3) no longer says so, but S3 still answers 200 to it, and S3 clients read 304 as
 * an error (botocore's ClientError "Not Modified").
 */
export type Conditional = 'ok' | 'not-modified';

export function evaluateConditions(headers: IncomingHttpHeaders, version: string, mtimeMs: number, nowMs: number): Conditional {
  const ifMatch = headers['if-match'];
  const ifNoneMatch = headers['if-none-match'];
  const mtime = Math.floor(mtimeMs / 1000);
  if (ifMatch !== undefined) {
    if (!etagListMatches(ifMatch, version, true)) throw s3Errors.preconditionFailed('If-Match');
  } else {
    const since = httpDateSeconds(headers['if-unmodified-since']);
    if (since !== undefined && mtime > since) throw s3Errors.preconditionFailed('If-Unmodified-Since');
  }
  if (ifNoneMatch !== undefined) {
    if (etagListMatches(ifNoneMatch, version)) return 'not-modified';
  } else {
    const since = httpDateSeconds(headers['if-modified-since']);
    if (since !== undefined && mtime <= since && since <= Math.floor(nowMs / 1000)) return 'not-modified';
  }
  return 'ok';
}

/**
 * "*" or a comma-separated list of quoted ETags. `strong` (If-Match) takes no weak tag (W/"…")
 * for a match, as RFC 9110 asks; If-None-Match compares weakly.
 */
export function etagListMatches(header: string, version: string, strong = false): boolean {
  return header.split(',').some((raw) => {
    const tag = raw.trim();
    return tag === '*' || (!(strong && tag.startsWith('W/')) && unquote(tag) === version);
  });
}

function unquote(tag: string): string {
  return tag.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

const DAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
const MONTH = '(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)';
/** The three forms of HTTP-date (RFC 9110 5.6.7): IMF-fixdate, RFC 850's, asctime's. */
const HTTP_DATE = new RegExp(
  String.raw`^(?:${DAY}, \d{2} ${MONTH} \d{4} \d{2}:\d{2}:\d{2} GMT` +
    String.raw`|(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), \d{2}-${MONTH}-\d{2} \d{2}:\d{2}:\d{2} GMT` +
    String.raw`|${DAY} ${MONTH} [ \d]\d \d{2}:\d{2}:\d{2} \d{4})$`,
);

/**
 * An HTTP-date in seconds, or undefined for anything else: such a header is ignored (RFC 9110),
 * where Date.parse would take "9999" for the year 9999.
 */
function httpDateSeconds(value: string | undefined): number | undefined {
  if (value === undefined || !HTTP_DATE.test(value.trim())) return undefined;
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
