import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type ListObjectsV2CommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Readable } from 'node:stream';
import { FanoutError, abortError, outOfDescriptors } from '../../core/errors.js';
import type { DirEntry, FileInfo } from '../../core/types.js';
import { resolveDeadlines, timedOut, withDeadline } from './deadlines.js';

import { remoteRangeStream } from './remoterange.js';
import { S3AnswerTooLarge, boundS3Answers } from './s3answers.js';
import { DEFAULT_MAX_LIST_ENTRIES, ListingBudget, nextPageToken } from './s3listing.js';
import { refusedRange } from './validators.js';
import type { S3SourceOptions, SourceDeadlines, SourceOptions, Ufs } from './types.js';
import { addressableSize, changed, checkPath, destroyQuietly, isAbortLike, isSizeMtimeVersion, sizeMtimeVersion } from './util.js';

/** The slowest upload writeExclusive waits for, beyond the first-byte deadline. */
const UPLOAD_FLOOR_BYTES_PER_S = 64 * 1024;

/** The S3Client settings fanout uses for every S3 source (and the test harness reuses). */
export function s3ClientConfig(options: S3SourceOptions = {}, deadlines: SourceDeadlines = resolveDeadlines()): S3ClientConfig {
  const credentials =
    options.accessKeyId && options.secretAccessKey
      ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey }
      : undefined; // undefined: the SDK's default chain (env vars, profiles, instance roles)
  return {
    endpoint: options.endpoint,
    // The JS SDK ignores AWS_DEFAULT_REGION and throws without a region; S3-compatible
    // servers accept anything, so us-east-1 is the harmless last resort.
    region: options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
    credentials,
    // A custom endpoint is almost always MinIO/Ceph/etc., which want path-style addressing.
    forcePathStyle: options.forcePathStyle ?? Boolean(options.endpoint),
    // Default checksums break ranged GETs and S3-compatible servers; pages carry their own.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Connect only: first byte and progress are watched by withDeadline and sourceStream, which
    // abort the request; the SDK's requestTimeout would also count time our consumer holds the body.
    requestHandler: { connectionTimeout: deadlines.connectMs || undefined },
  };
}

/** A bucket (and optional key prefix) of an S3-compatible object store. */
export class S3Ufs implements Ufs {
  readonly bucket: string;
  /** "" or a prefix ending in "/": keys are `${base}${path}`. */
  private readonly base: string;
  private readonly client: S3Client;
  private readonly ownsClient: boolean;
  private readonly deadlines: SourceDeadlines;
  private readonly label: string | undefined;
  private readonly maxListEntries: number;
  /** "key\0version" → size, from stats: a Content-Range total that differs is another object. */
  private readonly knownSizes = new Map<string, number>();

  constructor(bucket: string, prefix = '', options: S3SourceOptions = {}, client?: S3Client, source: SourceOptions = {}) {
    if (!bucket) throw new FanoutError('INVALID_CONFIG', 'an S3 source needs a bucket');
    this.bucket = bucket;
    const trimmed = prefix.replace(/^\/+|\/+$/g, '');
    this.base = trimmed ? `${trimmed}/` : '';
    this.deadlines = resolveDeadlines(source.deadlines);
    this.label = source.label?.replace(/\/+$/, '');
    this.maxListEntries = source.maxListEntries ?? DEFAULT_MAX_LIST_ENTRIES;
    this.client = client ?? new S3Client(s3ClientConfig(options, this.deadlines));
    this.ownsClient = !client;
    boundS3Answers(this.client);
  }

  async stat(path: string, signal?: AbortSignal): Promise<FileInfo> {
    checkPath(path);
    if (path === '') throw new FanoutError('IS_A_DIRECTORY', `${this.describe(path)} is the root of the source`);
    const key = this.base + path;
    try {
      const out = await withDeadline(this.deadlines.firstByteMs, this.describe(path), signal, (sig) =>
        this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), opts(sig)),
      );
      // Read as 0, an object whose HEAD had no length was served as an empty file, successfully.
      if (out.ContentLength === undefined) {
        throw new FanoutError('SOURCE_ERROR', `${this.describe(path)}: the S3 server's HEAD answer gives no Content-Length, so fanout cannot tell the object's size`);
      }
      const size = addressableSize(out.ContentLength, this.describe(path));
      const mtimeMs = out.LastModified?.getTime() ?? 0;
      const version = strongEtag(out.ETag) ?? sizeMtimeVersion(size, mtimeMs);
      this.remember(path, version, size);
      return { path, size, mtimeMs, version };
    } catch (err) {
      if (!isNotFound(err)) throw this.mapError(err, path, signal);
    }
    // S3 has no directories: a missing key with keys under "key/" is one.
    if (await this.hasKeysUnder(`${key}/`, signal)) {
      throw new FanoutError('IS_A_DIRECTORY', `${this.describe(path)} is a directory (a prefix)`);
    }
    throw new FanoutError('NOT_FOUND', `${this.describe(path)} does not exist`);
  }

  async list(dir: string, signal?: AbortSignal): Promise<DirEntry[]> {
    checkPath(dir);
    const prefix = dir === '' ? this.base : `${this.base}${dir}/`;
    const entries: DirEntry[] = [];
    let sawAnything = false;
    let token: string | undefined;
    const seenTokens = new Set<string>();
    const dirs = new Set<string>();
    // One entry per sub-directory, whether S3 gives it as a common prefix or (a server that ignores
    // Delimiter) only as keys below it: those were skipped, and the sub-directory went unlisted.
    const addDir = (below: string) => {
      const name = below.slice(0, below.indexOf('/'));
      if (name === '' || dirs.has(name)) return;
      dirs.add(name);
      entries.push({ name, type: 'dir' });
    };
    const budget = new ListingBudget(this.describe(dir), this.maxListEntries, this.deadlines.listMs, signal);
    let kept = 0;
    try {
      do {
        let out: ListObjectsV2CommandOutput;
        try {
          const page = token;
          out = await withDeadline(this.deadlines.firstByteMs, this.describe(dir), budget.signal, (sig) =>
            this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, Delimiter: '/', ContinuationToken: page }), opts(sig)),
          );
        } catch (err) {
          throw this.mapError(err, dir, budget.signal);
        }
        // A key or prefix not under the one asked for (a server that ignores Prefix) is not in this
        // directory: cut by the prefix's length it became another name ("abcdx.bin" listed "dir/" as x.bin).
        for (const p of out.CommonPrefixes ?? []) {
          if (!p.Prefix?.startsWith(prefix)) continue;
          sawAnything = true;
          addDir(p.Prefix.slice(prefix.length));
        }
        for (const o of out.Contents ?? []) {
          if (!o.Key?.startsWith(prefix)) continue;
          sawAnything = true;
          const name = o.Key.slice(prefix.length);
          // Skips the "dir/" marker objects some tools create; a key further down names a sub-directory.
          if (!name) continue;
          if (name.includes('/')) {
            addDir(name);
            continue;
          }
          // A Size that is missing or no readable size is left out, not read as 0 or rounded: the
          // mount and the release publisher take a listed size for the file's, and stat it without one.
          const size = Number.isSafeInteger(o.Size) && o.Size! >= 0 ? o.Size : undefined;
          const mtimeMs = o.LastModified?.getTime() ?? 0;
          const version = strongEtag(o.ETag) ?? (size === undefined ? undefined : sizeMtimeVersion(size, mtimeMs));
          entries.push({ name, type: 'file', size, mtimeMs, version });
        }
        budget.charge((out.CommonPrefixes?.length ?? 0) + (out.Contents?.length ?? 0), charsFrom(entries, kept));
        kept = entries.length;
        token = nextPageToken(out, seenTokens, this.describe(dir));
      } while (token);
    } finally {
      budget.done();
    }
    if (!sawAnything && dir !== '') {
      // Nothing under "dir/": either dir is an object, or it does not exist.
      const isFile = await this.stat(dir, signal).then(
        () => true,
        (err) => {
          if (err instanceof FanoutError && (err.code === 'NOT_FOUND' || err.code === 'IS_A_DIRECTORY')) return false;
          throw err;
        },
      );
      if (isFile) throw new FanoutError('NOT_A_DIRECTORY', `${this.describe(dir)} is an object, not a directory`);
      throw new FanoutError('NOT_FOUND', `${this.describe(dir)} does not exist`);
    }
    // S3 lists in UTF-8 byte order; code-point order is what every other adapter returns.
    // A key "a" next to keys "a/..." gives both a file and a dir named "a": S3 allows that.
    return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  read(path: string, version: string, offset: number, length: number, signal?: AbortSignal): Readable {
    const bySizeMtime = isSizeMtimeVersion(version);
    return remoteRangeStream({
      path,
      version,
      offset,
      length,
      signal,
      what: this.describe(path),
      deadlines: this.deadlines,
      stat: (p, sig) => this.stat(p, sig),
      mapError: (err, body) => {
        const mapped = this.mapError(err, path, signal, body);
        if (mapped.code !== 'RANGE_NOT_SATISFIABLE') return mapped;
        const knownSize = this.knownSizes.get(`${path}\0${version}`);
        return refusedRange(invalidRangeTotal(err), { offset, length, version, knownSize, what: this.describe(path) });
      },
      openRange: async (streamSignal) => {
        const out = await this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: this.base + path,
            Range: `bytes=${offset}-${offset + length - 1}`,
            // S3 answers 412 when the object changed. Servers that ignore If-Match are caught below;
            // a version by size and Last-Modified (no strong ETag) is no ETag to match.
            IfMatch: bySizeMtime ? undefined : `"${version}"`,
          }),
          opts(streamSignal),
        );
        const body = out.Body as unknown;
        // A listener from the start: an abort or reset before anyone reads is not a process crash.
        if (body instanceof Readable) body.on('error', () => {});
        const fail = (err: FanoutError): never => {
          if (body instanceof Readable) destroyQuietly(body);
          throw err;
        };
        const what = this.describe(path);
        const etag = strongEtag(out.ETag);
        if (!bySizeMtime && etag !== undefined && etag !== version) fail(changed(what, version, etag));
        // Every validator of the answer must agree with the version and the range asked for.
        // Range units are case-insensitive (RFC 9110 14.1): "Bytes 0-9/10" is a byte range too.
        const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/i.exec(out.ContentRange ?? '');
        if (range) {
          const total = range[3] === '*' ? undefined : Number(range[3]);
          if (Number(range[1]) === offset && total !== undefined && Number(range[2]) === total - 1 && total < offset + length) {
            fail(new FanoutError('SOURCE_TRUNCATED', `${what}: has ${total} bytes, fewer than the ${offset + length} asked for`));
          }
          if (Number(range[1]) !== offset || Number(range[2]) !== offset + length - 1) {
            fail(new FanoutError('SOURCE_ERROR', `${what}: asked for bytes ${offset}-${offset + length - 1}, got ${out.ContentRange}`));
          }
          if (bySizeMtime && total !== undefined && out.LastModified && !sameSizeAndSecond(version, total, out.LastModified.getTime())) {
            fail(changed(what, version, sizeMtimeVersion(total, out.LastModified.getTime())));
          }
          const known = this.knownSizes.get(`${path}\0${version}`);
          if (known !== undefined && range[3] !== '*' && Number(range[3]) !== known) {
            fail(new FanoutError('SOURCE_CHANGED', `${what}: version ${version} had ${known} bytes, the source now says ${range[3]}`));
          }
        } else if (!(offset === 0 && out.ContentLength === length)) {
          // No Content-Range: the server sent the whole object (it ignores Range); never cut down, see validators.ts.
          fail(new FanoutError('SOURCE_ERROR', `${what}: the S3 server ignored the Range header (no Content-Range in its answer)`));
        }
        if (out.ContentLength !== undefined && out.ContentLength !== length) {
          fail(new FanoutError('SOURCE_ERROR', `${what}: Content-Length ${out.ContentLength} for a range of ${length} bytes`));
        }
        if (!(body instanceof Readable)) {
          return fail(new FanoutError('SOURCE_ERROR', `${what}: the S3 client returned no Node stream`));
        }
        return { body };
      },
    });
  }

  /**
   * PutObject with If-None-Match: * (atomic on S3 and servers that support it). Servers that
   * ignore the header are covered by a HEAD check first, which leaves a small race window.
   */
  async writeExclusive(path: string, data: Buffer, signal?: AbortSignal): Promise<void> {
    checkPath(path);
    const exists = await this.stat(path, signal).then(
      () => true,
      (err) => {
        if (err instanceof FanoutError && err.code === 'NOT_FOUND') return false;
        throw err;
      },
    );
    if (exists) throw new FanoutError('ALREADY_EXISTS', `${this.describe(path)} already exists`);
    // The SDK has no deadline of its own: a server that takes the body and never answers held
    // `release publish` for ever. The upload's time is allowed for at 64 KiB/s on top.
    const deadlineMs = this.deadlines.firstByteMs + Math.ceil(data.length / UPLOAD_FLOOR_BYTES_PER_S) * 1000;
    try {
      await withDeadline(deadlineMs, this.describe(path), signal, (sig) =>
        this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.base + path, Body: data, IfNoneMatch: '*', ContentType: 'application/json' }), opts(sig)),
      );
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 412 || status === 409) throw new FanoutError('ALREADY_EXISTS', `${this.describe(path)} already exists`);
      throw this.mapError(err, path, signal);
    }
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.client.destroy();
  }

  private async hasKeysUnder(prefix: string, signal?: AbortSignal): Promise<boolean> {
    try {
      const out = await withDeadline(this.deadlines.firstByteMs, this.describe(prefix), signal, (sig) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, MaxKeys: 1 }), opts(sig)),
      );
      // Keys, not KeyCount: a server that ignores Prefix counts keys elsewhere, and a missing file was a directory.
      return (out.Contents ?? []).some((o) => o.Key?.startsWith(prefix));
    } catch (err) {
      throw this.mapError(err, prefix, signal);
    }
  }

  /** "/data/f.bin" with a label (a worker's mount); "s3://bucket/key" otherwise. */
  private describe(path: string): string {
    return this.label !== undefined ? `${this.label}/${path}` : `s3://${this.bucket}/${this.base}${path}`;
  }

  private remember(path: string, version: string, size: number): void {
    const key = `${path}\0${version}`;
    this.knownSizes.delete(key);
    this.knownSizes.set(key, size);
    if (this.knownSizes.size > 4096) this.knownSizes.delete(this.knownSizes.keys().next().value!);
  }

  /**
   * A bucket asked for at the wrong region's endpoint: S3 answers 301 PermanentRedirect, with the
   * bucket's region in x-amz-bucket-region (a HEAD's answer has nothing else). Said plainly: the
   * SDK's words were "Unknown, HTTP 301, UnknownError" for a stat.
   */
  private movedBucket(err: unknown, what: string): FanoutError {
    const e = err as { Endpoint?: unknown; $response?: { headers?: Record<string, string | undefined> } };
    const region = e.$response?.headers?.['x-amz-bucket-region'];
    const where = region ? `in region ${region.slice(0, 64)}` : typeof e.Endpoint === 'string' ? `at endpoint ${e.Endpoint.slice(0, 200)}` : 'elsewhere';
    return new FanoutError('SOURCE_ERROR', `${what}: bucket ${this.bucket} is ${where}, not at the endpoint asked (HTTP 301 PermanentRedirect): set s3.region (or s3.endpoint) to it`, { cause: err });
  }

  private mapError(err: unknown, path: string, signal?: AbortSignal, body?: { received: number; length: number }): FanoutError {
    if (err instanceof FanoutError) return err;
    const what = this.describe(path);
    if (signal?.aborted) return abortError(signal);
    const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    if (e?.name === 'TimeoutError' && /connect/i.test(e.message ?? '')) return timedOut(what, 'connect', this.deadlines.connectMs);
    if (isAbortLike(err)) return new FanoutError('ABORTED', `${what}: aborted`, { cause: err });
    // Node's IncomingMessage says "aborted" (ECONNRESET) when the server closes mid-body.
    if (body && (e?.code === 'ECONNRESET' || e?.code === 'ERR_STREAM_PREMATURE_CLOSE') && /aborted|premature/i.test(e.message ?? '')) {
      return new FanoutError('SOURCE_TRUNCATED', `${what}: the source closed the connection after ${body.received} of ${body.length} bytes`, { cause: err });
    }
    if (err instanceof S3AnswerTooLarge) return new FanoutError('SOURCE_ERROR', `${what}: ${err.reason}`, { cause: err });
    const status = e.$metadata?.httpStatusCode;
    if (status === 301) return this.movedBucket(err, what);
    if (e.name === 'NoSuchBucket') {
      return new FanoutError('SOURCE_ERROR', `${this.label ?? ''}${this.label ? ': ' : ''}bucket ${this.bucket} does not exist`, { cause: err });
    }
    if (isNotFound(err)) return new FanoutError('NOT_FOUND', `${what} does not exist`, { cause: err });
    const unclear = status !== undefined && status !== 412 && status !== 416 ? unclearAnswer(err, status) : undefined;
    if (unclear) return new FanoutError('SOURCE_ERROR', `${what}: ${unclear}`, { cause: err });
    if (e.name === 'PreconditionFailed' || status === 412) {
      return new FanoutError('SOURCE_CHANGED', `${what} changed at the source (ETag no longer matches)`, { cause: err });
    }
    if (e.name === 'InvalidRange' || status === 416) {
      return new FanoutError('RANGE_NOT_SATISFIABLE', `${what}: the range starts past the end of the object`, {
        cause: err,
      });
    }
    // No fd left for the connection: the worker at its limit, not the source failing (core/errors.ts).
    const ours = outOfDescriptors(err, what);
    if (ours) return ours;
    const detail = [e.name, status && `HTTP ${status}`, e.message].filter(Boolean).join(', ');
    return new FanoutError('SOURCE_ERROR', `${what}: S3 request failed (${detail})`, { cause: err });
  }
}

/** Characters of names and versions in entries[from..]: what a listing page added to memory. */
function charsFrom(entries: DirEntry[], from: number): number {
  let chars = 0;
  for (let i = from; i < entries.length; i++) chars += entries[i]!.name.length + (entries[i]!.version?.length ?? 0);
  return chars;
}

/**
 * Words for an error answer the SDK cannot name: an HTML page (a proxy's or load balancer's
 * "502 Bad Gateway" where an S3 answer was expected), which the SDK reported as "XML parse error:
 * mismatched tags <hr> and </body>", and an error to HEAD, which has no body to carry a code
 * ("Unknown, HTTP 403, UnknownError"). Undefined for answers with an S3 error code.
 */
function unclearAnswer(err: unknown, status: number): string | undefined {
  const e = err as { name?: string; $response?: { headers?: Record<string, string | undefined> } };
  const type = e.$response?.headers?.['content-type'] ?? '';
  if (/^\s*text\/html/i.test(type)) {
    return `the S3 endpoint answered HTTP ${status} with an HTML page, not an S3 answer: a proxy, a load balancer or another server at s3.endpoint answered in its place`;
  }
  if (e.name !== 'Unknown' && e.name !== 'UnknownError') return undefined;
  const denied = status === 403 ? ': access denied, the credentials or the bucket policy do not allow it' : '';
  return `the S3 server answered HTTP ${status} with no error code (an answer to HEAD has no body)${denied}`;
}

function opts(signal?: AbortSignal): { abortSignal?: AbortSignal } {
  return signal ? { abortSignal: signal } : {};
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || (e?.name !== 'NoSuchBucket' && e?.$metadata?.httpStatusCode === 404);
}

/** The object's size an InvalidRange answer gives: its Content-Range ("bytes *\/N"), or S3's ActualObjectSize. */
function invalidRangeTotal(err: unknown): number | undefined {
  const e = err as { ActualObjectSize?: unknown; $response?: { headers?: Record<string, string | undefined> } };
  const raw = /\/(\d+)\s*$/.exec(e?.$response?.headers?.['content-range'] ?? '')?.[1] ?? (typeof e?.ActualObjectSize === 'string' ? e.ActualObjectSize : undefined);
  return raw !== undefined && /^\d+$/.test(raw) ? Number(raw) : undefined;
}

/**
 * Whether a size-mtime version names an object of `size` bytes modified in the second of `mtimeMs`:
 * listings give milliseconds where HEAD and GET give an HTTP-date's whole seconds.
 */
function sameSizeAndSecond(version: string, size: number, mtimeMs: number): boolean {
  const [versionSize, versionMs] = version.split('-').map(Number) as [number, number];
  return versionSize === size && Math.floor(versionMs / 1000) === Math.floor(mtimeMs / 1000);
}

/** The ETag without quotes; undefined for none or a weak one (W/"…"), which names equivalent content, not the bytes. */
export function strongEtag(etag: string | undefined): string | undefined {
  if (!etag || etag.startsWith('W/')) return undefined;
  return etag.replace(/^"(.*)"$/, '$1');
}
