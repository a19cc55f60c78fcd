import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { FanoutError, abortError, outOfDescriptors } from '../../core/errors.js';
import type { DirEntry, FileInfo } from '../../core/types.js';
import { encodeUrlPath } from '../../core/paths.js';
import { ConnectionPool, ResponseParseError, TransportError, type LeanResponse } from '../leanhttp/index.js';
import { httpSlabs } from './chunks.js';
import { resolveDeadlines, timedOut, withDeadline } from './deadlines.js';
import { iterableBody, type SourceBody } from './stream.js';
import { remoteRangeStream } from './remoterange.js';
import type { SourceDeadlines, SourceOptions, Ufs, Versioning } from './types.js';
import { addressableSize, changed, checkPath, destroyQuietly, isAbortLike, isSizeMtimeVersion } from './util.js';
import { RedirectMemory, redirectLifetime } from './redirects.js';
import { AS_STORED, followRedirects, nextHop, requestOnce, validatorsAsUndiciReads, type FollowFrom, type Requester, type Response } from './httpsend.js';
import { checkRangeAnswer, codingMismatch, contentCoding, describeVersion, header, rangeTotal, refusedRange, unversioned } from './validators.js';

export interface HttpUfsOptions extends SourceOptions {
  /** An undici Agent/Pool with the connection limits you want; default: an Agent of this source's own with its connect deadline. */
  dispatcher?: Dispatcher;
}

/** Versions remembered per source to check a range answer's total size and content coding (one entry is ~100 bytes). */
const KNOWN_SIZES = 4096;

/** A range answer read by either client: what read() checks before handing the body on. */
interface RangeAnswer {
  statusCode: number;
  headers: IncomingHttpHeaders;
  url: URL;
  body: SourceBody;
  /** Set when redirects led to `url`: how long it may be asked directly (RedirectMemory). */
  redirectedFor?: number;
}

/** What a stat of one version saw: its size (a range answer's total must agree) and its content coding ('' for none). */
interface KnownVersion {
  size: number;
  coding: string;
}

/** Connections per origin for range reads (the worker's fill slots bound how many are busy). */
const RANGE_CONNECTIONS = 64;
/** setTimeout's largest delay: "no deadline" for the lean client, whose stalls SourceStream watches instead. */
const NO_DEADLINE = 2 ** 31 - 1;

/**
 * Files under an HTTP(S) base URL (a web server, a CDN, a model hub). HTTP has no listing, so
 * this source can stat and read files by name only.
 *
 * Version: the strong ETag without quotes. Without one, a strict source (the default) refuses
 * the file (SOURCE_UNVERSIONED); a weak one uses "size-mtime" from Content-Length and
 * Last-Modified. A read recomputes the version from its own response headers the same way and
 * refuses bytes of any other version (validators.ts).
 */
export class HttpUfs implements Ufs {
  readonly baseUrl: URL;
  readonly versioning: Versioning;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly deadlines: SourceDeadlines;
  private readonly label: string | undefined;
  /** "path\0version" → what its stat saw: a read checks a Content-Range total and a Content-Encoding against it. */
  private readonly known = new Map<string, KnownVersion>();
  /** Where each file's range reads were redirected to: asked directly next time (one request a page, not three). */
  private readonly redirects = new RedirectMemory();
  /**
   * Range reads (the data path) go through the lean client: about half undici's CPU per byte,
   * read into pooled slabs (docs/benchmarks.md). Not with a dispatcher of the caller's, whose
   * connection settings (TLS, proxies) only undici knows; stats, probes and redirects use undici.
   */
  private readonly ranges: ConnectionPool | undefined;

  constructor(baseUrl: string, options: HttpUfsOptions = {}) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new FanoutError('INVALID_CONFIG', `invalid HTTP source URL ${JSON.stringify(baseUrl)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new FanoutError('INVALID_CONFIG', `an HTTP source needs an http:// or https:// URL, got ${baseUrl}`);
    }
    // A trailing slash makes new URL(relative, base) resolve below the base, not beside it.
    if (!url.pathname.endsWith('/')) url.pathname += '/';
    url.hash = '';
    this.baseUrl = url;
    this.versioning = options.versioning ?? 'strict';
    this.deadlines = resolveDeadlines(options.deadlines);
    this.label = options.label?.replace(/\/+$/, '');
    this.ownsDispatcher = !options.dispatcher;
    // undici's own defaults (10 s connect, 300 s headers and body) are what let a hung origin hold a read for minutes.
    this.dispatcher = options.dispatcher ?? new Agent({ connect: { timeout: this.deadlines.connectMs || undefined } });
    const { connectMs, firstByteMs } = this.deadlines;
    this.ranges = options.dispatcher
      ? undefined
      : new ConnectionPool(url.origin, {
          connections: RANGE_CONNECTIONS,
          // The body's progress is SourceStream's to judge (it does not count a slow consumer's time).
          timeouts: { connectMs: connectMs || NO_DEADLINE, firstByteMs: firstByteMs || NO_DEADLINE, idleMs: NO_DEADLINE },
          slabs: httpSlabs,
        });
  }

  async stat(path: string, signal?: AbortSignal): Promise<FileInfo> {
    checkPath(path);
    if (path === '') throw new FanoutError('IS_A_DIRECTORY', `${this.describe(path)} is the root of the source`);
    const what = this.describe(path);
    try {
      const { headers, size } = await withDeadline(this.deadlines.firstByteMs, what, signal, (sig) => this.statHeaders(path, sig));
      const { strong, ...info } = describeVersion(headers, size);
      if (!strong && this.versioning === 'strict') throw unversioned(what, this.label, headers);
      this.remember(path, info.version, { size, coding: contentCoding(headers) });
      return { path, ...info };
    } catch (err) {
      throw this.mapError(err, path, signal);
    }
  }

  /**
   * The headers that describe the file, and its size: from HEAD, or a one-byte range when HEAD
   * says nothing, or says 0 bytes. A HEAD's "Content-Length: 0" is also what a server says whose
   * handlers skip the body for HEAD (Go's net/http then counts what they wrote: nothing); taken
   * for the size, the file was served as empty, successfully.
   */
  private async statHeaders(path: string, signal: AbortSignal): Promise<{ headers: IncomingHttpHeaders; size: number }> {
    const head = await this.send('HEAD', path, {}, signal);
    await head.body.dump();
    const headLength = head.statusCode === 200 ? header(head.headers, 'content-length') : undefined;
    const headSaysEmpty = headLength !== undefined && headLength.trim() === '0';
    if (headLength !== undefined && !headSaysEmpty) {
      return { headers: head.headers, size: this.sizeOf(headLength, path) };
    }
    if (head.statusCode !== 200 && head.statusCode !== 405 && head.statusCode !== 501) {
      throw this.statusError(head, path);
    }
    // No HEAD, or no length on HEAD (chunked), or 0: a one-byte range tells the size.
    const probe = await this.send('GET', path, { range: 'bytes=0-0' }, signal);
    await probe.body.dump();
    if (probe.statusCode === 206 || probe.statusCode === 416) {
      const total = rangeTotal(probe.headers);
      // An empty file has no byte 0 to give: a 416 without a size agrees with a HEAD that said 0.
      if (total === undefined && headSaysEmpty && probe.statusCode === 416) return { headers: head.headers, size: 0 };
      if (total === undefined) throw new FanoutError('SOURCE_ERROR', `${this.describe(path)}: no size in Content-Range`);
      return { headers: probe.headers, size: this.sizeOf(String(total), path) };
    }
    if (probe.statusCode === 200 && header(probe.headers, 'content-length') !== undefined) {
      return { headers: probe.headers, size: this.sizeOf(header(probe.headers, 'content-length')!, path) };
    }
    // Told as what it is: "the source answered HTTP 200" read as a failure of a request that succeeded.
    if (probe.statusCode === 200) throw this.noSize(path, head.statusCode, contentCoding(probe.headers));
    throw this.statusError(probe, path);
  }

  private noSize(path: string, headStatus: number, coding: string): FanoutError {
    const head = headStatus === 200 ? 'its HEAD answer has no Content-Length' : `it answers HEAD with HTTP ${headStatus}`;
    const proxy = coding === '' ? '' : ` The answer came with Content-Encoding: ${coding} although fanout asked for the file as stored (Accept-Encoding: identity): a proxy or CDN compressing against the request does this; turn its compression off for these requests.`;
    return new FanoutError(
      'SOURCE_ERROR',
      `${this.describe(path)}: the source gives no size: ${head}, and a request for its first byte (Range: bytes=0-0) was answered with the whole body (HTTP 200) and no Content-Length.${proxy} fanout reads files by range and needs a size from HEAD or Content-Range`,
    );
  }

  /** A length header as a size (a whole number fanout can address). */
  private sizeOf(raw: string, path: string): number {
    return addressableSize(Number(raw), this.describe(path), raw);
  }

  async list(dir: string): Promise<DirEntry[]> {
    throw new FanoutError('NOT_LISTABLE', `HTTP sources cannot be listed (${this.describe(dir)})`);
  }

  read(path: string, version: string, offset: number, length: number, signal?: AbortSignal): Readable {
    const what = this.describe(path);
    return remoteRangeStream({
      path,
      version,
      offset,
      length,
      signal,
      what,
      deadlines: this.deadlines,
      stat: (p, sig) => this.stat(p, sig),
      mapError: (err, body) => this.mapError(err, path, signal, body),
      openRange: async (streamSignal) => {
        const headers: Record<string, string> = { range: `bytes=${offset}-${offset + length - 1}` };
        // If-Match lets the server refuse a changed file (412) before sending bytes. A
        // "size-mtime" version is no ETag; those rely on the header check below.
        if (!isSizeMtimeVersion(version)) headers['if-match'] = `"${version}"`;
        const res = await this.getRange(path, version, headers, streamSignal);
        let problem: FanoutError | null;
        try {
          // First: a proxy's compressed answer differs in ETag and size too, which would read as SOURCE_CHANGED.
          problem = await this.codingProblem(res, path, version, streamSignal);
        } catch (err) {
          destroyQuietly(res.body);
          throw err;
        }
        const ask = { offset, length, version, versioning: this.versioning, knownSize: this.known.get(`${path}\0${version}`)?.size, what, label: this.label };
        problem ??=
          res.statusCode === 416
            ? refusedRange(rangeTotal(res.headers), ask)
            : res.statusCode !== 200 && res.statusCode !== 206
              ? this.statusError(res, path)
              : checkRangeAnswer(res.statusCode, res.headers, ask);
        if (problem) {
          destroyQuietly(res.body);
          this.redirects.forget(path);
          throw problem;
        }
        // Only a target that gave the right bytes is asked directly next time.
        if (res.redirectedFor !== undefined) this.redirects.remember(path, version, res.url, res.redirectedFor);
        return { body: res.body };
      },
    });
  }

  async close(): Promise<void> {
    this.ranges?.close();
    // A dispatcher passed in belongs to whoever passed it.
    if (this.ownsDispatcher) await this.dispatcher.destroy().catch(() => {});
  }

  /**
   * A range GET: at the target a redirect of this file led to last time, if HTTP lets it be
   * reused and it still answers with bytes; otherwise at the file's own URL, following redirects.
   * Same-origin requests go by the lean client, others by undici.
   */
  private async getRange(path: string, version: string, headers: Record<string, string>, signal: AbortSignal): Promise<RangeAnswer> {
    const remembered = this.redirects.target(path, version);
    if (remembered) {
      const res = await this.getAt(path, remembered, headers, signal).catch((err: unknown) => {
        if (signal.aborted) throw err;
        return undefined;
      });
      if (res && (res.statusCode === 200 || res.statusCode === 206)) return res;
      // The target failed (a signed URL expired, the file moved again, its server is down): asked afresh.
      if (res) destroyQuietly(res.body);
      this.redirects.forget(path);
    }
    const url = this.url(path);
    if (!this.ranges) return this.send('GET', path, headers, signal);
    const res = await this.ranges.get(`${url.pathname}${url.search}`, { ...AS_STORED, ...headers }, signal);
    let next: URL | undefined;
    try {
      next = nextHop(this.describe(path), url, res.statusCode, res.headers, 0);
    } catch (err) {
      res.destroy();
      throw err;
    }
    if (next) {
      res.destroy();
      // Followed from where this answer points: asking the file's URL again cost a third request a page.
      return this.send('GET', path, headers, signal, { url: next, hop: 1, redirectedFor: redirectLifetime(res.statusCode, res.headers, Date.now()) });
    }
    return { statusCode: res.statusCode, headers: validatorsAsUndiciReads(res.headers), url, body: iterableBody(res.body, () => res.destroy()) };
  }

  /** One GET at `url`, redirects not followed (a redirect there is a failure of the remembered target). */
  private async getAt(path: string, url: URL, headers: Record<string, string>, signal: AbortSignal): Promise<RangeAnswer> {
    if (this.ranges && url.origin === this.baseUrl.origin) {
      const res = await this.ranges.get(`${url.pathname}${url.search}`, { ...AS_STORED, ...headers }, signal);
      return { statusCode: res.statusCode, headers: validatorsAsUndiciReads(res.headers), url, body: iterableBody(res.body, () => res.destroy()) };
    }
    const res = await requestOnce(this.requester(path), 'GET', url, headers, signal);
    return Object.assign(res, { url });
  }

  /**
   * The error for an answer whose Content-Encoding is not the one the stat of its version saw
   * (none, unless the file is stored compressed), or null. A worker reading a page it never
   * stat'ed stats the file first when the answer is coded, to tell a stored coding from a proxy's.
   */
  private async codingProblem(res: RangeAnswer, path: string, version: string, signal: AbortSignal): Promise<FanoutError | null> {
    if (res.statusCode !== 200 && res.statusCode !== 206 && res.statusCode !== 412) return null;
    const answered = contentCoding(res.headers);
    const key = `${path}\0${version}`;
    if (!this.known.has(key)) {
      if (answered === '') return null;
      const info = await this.stat(path, signal);
      if (info.version !== version) return changed(this.describe(path), version, info.version);
    }
    const statSaw = this.known.get(key)?.coding ?? '';
    return answered === statSaw ? null : codingMismatch(this.describe(path), answered, statSaw);
  }

  private remember(path: string, version: string, seen: KnownVersion): void {
    const key = `${path}\0${version}`;
    this.known.delete(key);
    this.known.set(key, seen);
    if (this.known.size > KNOWN_SIZES) this.known.delete(this.known.keys().next().value!);
  }

  private url(path: string): URL {
    return new URL(encodeUrlPath(path), this.baseUrl);
  }

  /** "/web/f.bin" with a label (a worker's mounts); the URL otherwise (the CLI, the SDK's direct reads). */
  private describe(path: string): string {
    return this.label !== undefined ? `${this.label}/${path}` : this.url(path).href;
  }

  /** One request, redirects followed by hand (httpsend.ts). */
  private send(method: 'GET' | 'HEAD', path: string, headers: Record<string, string>, signal?: AbortSignal, from?: FollowFrom): Promise<Response> {
    return followRedirects(this.requester(path), method, this.url(path), headers, signal, from);
  }

  private requester(path: string): Requester {
    return { dispatcher: this.dispatcher, firstByteMs: this.deadlines.firstByteMs, what: this.describe(path) };
  }

  private statusError(res: Pick<Response, 'statusCode' | 'url'>, path: string): FanoutError {
    const what = this.describe(path);
    switch (res.statusCode) {
      case 404:
      case 410:
        return new FanoutError('NOT_FOUND', `${what} does not exist (HTTP ${res.statusCode})`);
      case 412:
        return new FanoutError('SOURCE_CHANGED', `${what} changed at the source (ETag no longer matches)`);
      case 416:
        return new FanoutError('RANGE_NOT_SATISFIABLE', `${what}: the range starts past the end of the file`);
      default: {
        // The origin's URL is the operator's business, not every reader's: named only without a label.
        const from = this.label === undefined ? ` from ${res.url.href}` : '';
        return new FanoutError('SOURCE_ERROR', `${what}: the source answered HTTP ${res.statusCode}${from}`);
      }
    }
  }

  private mapError(err: unknown, path: string, signal?: AbortSignal, body?: { received: number; length: number }): FanoutError {
    if (err instanceof FanoutError) return err;
    if (signal?.aborted) return abortError(signal);
    const what = this.describe(path);
    const e = err as { code?: string; message?: string };
    if (e?.code === 'UND_ERR_CONNECT_TIMEOUT' || e?.code === 'FANOUT_CONNECT_TIMEOUT') return timedOut(what, 'connect', this.deadlines.connectMs);
    if (e?.code === 'UND_ERR_HEADERS_TIMEOUT' || e?.code === 'FANOUT_FIRST_BYTE_TIMEOUT') return timedOut(what, 'firstByte', this.deadlines.firstByteMs);
    if (isAbortLike(err)) return new FanoutError('ABORTED', `${what}: aborted`, { cause: err });
    if (body && isCut(err)) {
      return new FanoutError('SOURCE_TRUNCATED', `${what}: the source closed the connection after ${body.received} of ${body.length} bytes`, { cause: err });
    }
    // No fd left for the connection: the worker at its limit, not the source failing (core/errors.ts).
    const ours = outOfDescriptors(err, what);
    if (ours) return ours;
    const detail = [e?.code, e?.message].filter(Boolean).join(': ');
    return new FanoutError('SOURCE_ERROR', `${what}: request failed (${detail || String(err)})`, { cause: err });
  }
}

/**
 * A connection the server closed (FIN) before the body's end, in either client's words; a reset
 * (ECONNRESET) is not a cut but a fault.
 */
function isCut(err: unknown): boolean {
  const e = err as { code?: string } | null;
  if (err instanceof ResponseParseError) return err.cut;
  if (err instanceof TransportError) return err.code === 'FANOUT_SOCKET_CLOSED';
  return e?.code === 'UND_ERR_SOCKET' || e?.code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH';
}
