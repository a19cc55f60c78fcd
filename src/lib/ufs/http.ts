import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import { FanoutError, abortError } from '../../core/errors.js';
import type { DirEntry, FileInfo } from '../../core/types.js';
import { encodeUrlPath } from '../../core/paths.js';
import { sourceStream } from './stream.js';
import type { Ufs } from './types.js';
import { assertVersion, changed, checkPath, checkRange, isAbortLike, sizeMtimeVersion } from './util.js';

const MAX_REDIRECTS = 5;

export interface HttpUfsOptions {
  /** An undici Agent/Pool with the connection limits you want; default: undici's global agent. */
  dispatcher?: Dispatcher;
}

type Response = Dispatcher.ResponseData & { url: URL };

/**
 * Files under an HTTP(S) base URL (a web server, a CDN, a model hub). HTTP has no listing, so
 * this source can stat and read files by name only.
 *
 * Version: the strong ETag without quotes when the server sends one, else "size-mtime" from
 * Content-Length and Last-Modified. A read recomputes the version from its own response
 * headers the same way and refuses bytes of any other version.
 */
export class HttpUfs implements Ufs {
  readonly baseUrl: URL;
  private readonly dispatcher: Dispatcher | undefined;

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
    this.dispatcher = options.dispatcher;
  }

  async stat(path: string, signal?: AbortSignal): Promise<FileInfo> {
    checkPath(path);
    if (path === '') throw new FanoutError('IS_A_DIRECTORY', `${this.describe(path)} is the root of the source`);
    try {
      const head = await this.send('HEAD', path, {}, signal);
      await head.body.dump();
      if (head.statusCode === 200 && header(head.headers, 'content-length') !== undefined) {
        return { path, ...describeVersion(head.headers, Number(header(head.headers, 'content-length'))) };
      }
      if (head.statusCode !== 200 && head.statusCode !== 405 && head.statusCode !== 501) {
        throw this.statusError(head, path);
      }
      // No HEAD, or no length on HEAD (chunked): a one-byte range tells the size.
      const probe = await this.send('GET', path, { range: 'bytes=0-0' }, signal);
      await probe.body.dump();
      if (probe.statusCode === 206 || probe.statusCode === 416) {
        const total = rangeTotal(probe.headers);
        if (total === undefined) throw new FanoutError('SOURCE_ERROR', `${this.describe(path)}: no size in Content-Range`);
        return { path, ...describeVersion(probe.headers, total) };
      }
      if (probe.statusCode === 200 && header(probe.headers, 'content-length') !== undefined) {
        return { path, ...describeVersion(probe.headers, Number(header(probe.headers, 'content-length'))) };
      }
      throw this.statusError(probe, path);
    } catch (err) {
      throw this.mapError(err, path, signal);
    }
  }

  async list(dir: string): Promise<DirEntry[]> {
    throw new FanoutError('INVALID_ARGUMENT', `HTTP sources cannot be listed (${this.describe(dir)})`);
  }

  read(path: string, version: string, offset: number, length: number, signal?: AbortSignal): Readable {
    const what = this.describe(path);
    return sourceStream({
      expected: length,
      what,
      signal,
      mapError: (err) => this.mapError(err, path, signal),
      open: async (streamSignal) => {
        checkPath(path);
        checkRange(offset, length);
        if (length === 0) {
          await assertVersion((p, sig) => this.stat(p, sig), path, version, what, streamSignal);
          return { body: null };
        }
        const headers: Record<string, string> = { range: `bytes=${offset}-${offset + length - 1}` };
        // If-Match lets the server refuse a changed file (412) before sending bytes. A
        // "size-mtime" version is no ETag; those rely on the header check below.
        if (!/^\d+-\d+$/.test(version)) headers['if-match'] = `"${version}"`;
        const res = await this.send('GET', path, headers, streamSignal);
        try {
          if (res.statusCode !== 200 && res.statusCode !== 206) throw this.statusError(res, path);
          const size = res.statusCode === 206 ? rangeTotal(res.headers) : Number(header(res.headers, 'content-length'));
          const now = size === undefined || Number.isNaN(size) ? undefined : describeVersion(res.headers, size).version;
          // Servers without If-Match support (and all size-mtime versions) are checked here.
          if (now !== version) throw changed(what, version, now);
          if (res.statusCode === 200 && !(offset === 0 && size === length)) {
            // Same version, whole file although a range was asked: the server ignores Range.
            throw new FanoutError('SOURCE_ERROR', `${what}: the server does not support range requests`);
          }
          const start = /^bytes (\d+)-/.exec(header(res.headers, 'content-range') ?? '')?.[1];
          if (res.statusCode === 206 && Number(start) !== offset) {
            throw new FanoutError('SOURCE_ERROR', `${what}: asked for offset ${offset}, got ${header(res.headers, 'content-range')}`);
          }
        } catch (err) {
          res.body.destroy();
          throw err;
        }
        return { body: res.body };
      },
    });
  }

  async close(): Promise<void> {
    // The dispatcher belongs to whoever passed it; the global agent is shared.
  }

  private url(path: string): URL {
    return new URL(encodeUrlPath(path), this.baseUrl);
  }

  private describe(path: string): string {
    return this.url(path).href;
  }

  /** One request, following redirects by hand so that "/dir" → "/dir/" reads as a directory. */
  private async send(
    method: 'GET' | 'HEAD',
    path: string,
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<Response> {
    let url = this.url(path);
    for (let hop = 0; ; hop++) {
      const res = await request(url, {
        method,
        headers,
        signal,
        dispatcher: this.dispatcher,
        highWaterMark: 1024 * 1024,
      });
      const location = header(res.headers, 'location');
      if (res.statusCode < 300 || res.statusCode >= 400 || res.statusCode === 304 || !location) {
        return Object.assign(res, { url });
      }
      await res.body.dump();
      const next = new URL(location, url);
      if (next.href === `${url.href}/`) {
        throw new FanoutError('IS_A_DIRECTORY', `${this.describe(path)} is a directory`);
      }
      if (hop >= MAX_REDIRECTS) {
        throw new FanoutError('SOURCE_ERROR', `${this.describe(path)}: more than ${MAX_REDIRECTS} redirects`);
      }
      url = next;
    }
  }

  private statusError(res: Response, path: string): FanoutError {
    const what = this.describe(path);
    switch (res.statusCode) {
      case 404:
      case 410:
        return new FanoutError('NOT_FOUND', `${what} does not exist (HTTP ${res.statusCode})`);
      case 412:
        return new FanoutError('SOURCE_CHANGED', `${what} changed at the source (ETag no longer matches)`);
      case 416:
        return new FanoutError('RANGE_NOT_SATISFIABLE', `${what}: the range starts past the end of the file`);
      default:
        return new FanoutError('SOURCE_ERROR', `${what}: HTTP ${res.statusCode} from ${res.url.href}`);
    }
  }

  private mapError(err: unknown, path: string, signal?: AbortSignal): FanoutError {
    if (err instanceof FanoutError) return err;
    if (signal?.aborted) return abortError(signal);
    const what = this.describe(path);
    if (isAbortLike(err)) return new FanoutError('ABORTED', `${what}: aborted`, { cause: err });
    const e = err as { code?: string; message?: string };
    const detail = [e.code, e.message].filter(Boolean).join(': ');
    return new FanoutError('SOURCE_ERROR', `${what}: request failed (${detail || String(err)})`, { cause: err });
  }
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** "bytes 0-0/1234" or "bytes *\/1234" → 1234. */
function rangeTotal(headers: IncomingHttpHeaders): number | undefined {
  const total = /\/(\d+)\s*$/.exec(header(headers, 'content-range') ?? '')?.[1];
  return total === undefined ? undefined : Number(total);
}

/** Size, mtime and version from response headers; the same rules for stat and read. */
function describeVersion(headers: IncomingHttpHeaders, size: number): Omit<FileInfo, 'path'> {
  const modified = Date.parse(header(headers, 'last-modified') ?? '');
  const mtimeMs = Number.isNaN(modified) ? 0 : modified;
  const etag = header(headers, 'etag');
  // Weak ETags (W/"...") promise equivalent content, not identical bytes: not a version.
  const strong = etag && !etag.startsWith('W/') ? /^"(.*)"$/.exec(etag)?.[1] ?? etag : undefined;
  return { size, mtimeMs, version: strong || sizeMtimeVersion(size, mtimeMs) };
}
