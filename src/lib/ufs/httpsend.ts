import type { IncomingHttpHeaders } from 'node:http';
import { request, type Dispatcher } from 'undici';
import { FanoutError } from '../../core/errors.js';
import { redirectLifetime } from './redirects.js';
import { header } from './validators.js';

/**
 * The HTTP source's requests by undici (stats, probes, redirects, and range reads when the lean
 * client is not used): what every request says, how redirects are followed, and how a lean
 * answer's validators are read so that both clients see the same version.
 */

const MAX_REDIRECTS = 5;

/**
 * Every request asks for the file's bytes as stored. A request without Accept-Encoding accepts
 * any coding (RFC 9110 12.5.3): a compressing proxy or CDN may then answer with the gzipped
 * file, whose size, ETag and ranges fanout took for the file's own, and served gzip to every
 * reader (found by a fault hunt). A file stored compressed (`Content-Encoding: gzip` on a
 * .tar.gz) is still read as stored, as curl and wget read it.
 */
export const AS_STORED = { 'accept-encoding': 'identity' };

/** What a request needs of its source: the connection pool, the first-byte deadline, the file as messages name it. */
export interface Requester {
  dispatcher: Dispatcher;
  firstByteMs: number;
  what: string;
}

/** An answer, the URL that gave it, and when redirects led there, how long HTTP lets them be reused (ms; Infinity: until they fail). */
export type Response = Dispatcher.ResponseData & { url: URL; redirectedFor?: number };

/** Where an earlier answer to the same request pointed (the lean client's), its hop, and how long that redirect may be reused. */
export interface FollowFrom {
  url: URL;
  hop: number;
  redirectedFor: number;
}

/**
 * One request, following redirects by hand so that "/dir" → "/dir/" reads as a directory.
 * `from`: where an earlier answer of this request pointed (the lean client's), its hop count and
 * how long that redirect may be reused. The answer says how long the redirects that led to it
 * may be (the shortest of their lifetimes), when there were any.
 */
export async function followRedirects(
  requester: Requester,
  method: 'GET' | 'HEAD',
  start: URL,
  headers: Record<string, string>,
  signal?: AbortSignal,
  from?: FollowFrom,
): Promise<Response> {
  let url = from?.url ?? start;
  let redirectedFor = from?.redirectedFor;
  for (let hop = from?.hop ?? 0; ; hop++) {
    const res = await requestOnce(requester, method, url, headers, signal);
    const next = nextHop(requester.what, url, res.statusCode, res.headers, hop);
    if (!next) return Object.assign(res, { url, redirectedFor });
    await res.body.dump();
    redirectedFor = Math.min(redirectedFor ?? Infinity, redirectLifetime(res.statusCode, res.headers, Date.now()));
    url = next;
  }
}

/**
 * Where a redirect answer points, or undefined for any other answer. Only to http(s): a
 * Location of another scheme (file:, ftp:, data:) is refused by name, as is a redirect past
 * MAX_REDIRECTS (a loop).
 */
export function nextHop(what: string, url: URL, statusCode: number, headers: IncomingHttpHeaders, hop: number): URL | undefined {
  const location = header(headers, 'location');
  if (statusCode < 300 || statusCode >= 400 || statusCode === 304 || !location) return undefined;
  let next: URL;
  try {
    next = new URL(location, url);
  } catch {
    throw new FanoutError('SOURCE_ERROR', `${what}: the source redirects to ${JSON.stringify(location.slice(0, 80))}, which is not a URL`);
  }
  if (next.href === `${url.href}/`) {
    throw new FanoutError('IS_A_DIRECTORY', `${what} is a directory`);
  }
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    throw new FanoutError('SOURCE_ERROR', `${what}: the source redirects to a ${next.protocol.slice(0, 20)} URL; fanout follows redirects to http and https only`);
  }
  if (hop >= MAX_REDIRECTS) {
    throw new FanoutError('SOURCE_ERROR', `${what}: more than ${MAX_REDIRECTS} redirects`);
  }
  next.hash = '';
  return next;
}

/** One request by undici, redirects not followed. */
export async function requestOnce(requester: Requester, method: 'GET' | 'HEAD', url: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
  const options = {
    method,
    headers: { ...AS_STORED, ...headers },
    signal,
    dispatcher: requester.dispatcher,
    highWaterMark: 1024 * 1024,
    headersTimeout: requester.firstByteMs,
    // Progress while the body streams is watched by sourceStream, which does not count the
    // time our consumer applies backpressure; undici's body timeout would.
    bodyTimeout: 0,
  };
  const res = await request(url, options).catch((err: unknown) => {
    // A kept-alive connection the server closed (its idle timeout) as our request went out
    // (a FIN: "other side closed"; a reset if the request reached the closed socket): no
    // response byte came, and GET/HEAD are idempotent, so once more on a new connection.
    // Seen in the lab under heavy load, where timers slip past undici's keep-alive margin.
    if (!LOST_ON_REUSE.has((err as { code?: string })?.code ?? '') || signal?.aborted) throw err;
    return request(url, options);
  });
  // From here on the body has a listener: an abort or reset before anyone reads it is not a crash.
  res.body.on('error', () => {});
  return res;
}

/** How a request sent on a connection the server had just closed fails, before any response byte. */
const LOST_ON_REUSE = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

/**
 * A lean answer's validators as undici reads them: undici decodes field values as UTF-8, the lean
 * parser as latin1 (byte for byte). The version a stat (undici) saw and the one a range answer
 * (lean) carries must compare equal for the same bytes — a non-ASCII ETag made every read of its
 * file fail as changed — and the If-Match that carries a version back is written as UTF-8.
 */
export function validatorsAsUndiciReads<T extends Record<string, string | string[] | undefined>>(headers: T): T {
  let out = headers;
  for (const name of ['etag', 'last-modified']) {
    const value = headers[name];
    if (typeof value !== 'string' || !/[^\x00-\x7f]/.test(value)) continue;
    if (out === headers) out = { ...headers };
    (out as Record<string, string>)[name] = Buffer.from(value, 'latin1').toString('utf8');
  }
  return out;
}
