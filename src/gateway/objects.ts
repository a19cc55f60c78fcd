import { FanoutError } from '../core/errors.js';
import { parseFanoutPath } from '../core/paths.js';
import { sendChunks } from '../lib/http/index.js';
import { evaluateConditions, selectRange } from './conditional.js';
import { DIRECTORY_CONTENT_TYPE, isMarkerKey, statMarker } from './dirmarkers.js';
import { S3Error, s3Errors, toS3Error } from './errors.js';
import type { GatewayBackend, RequestContext } from './types.js';
import { quoteEtag } from './xml.js';

/** Object subresources S3 has and a read-only cache does not serve. */
const UNSUPPORTED = ['acl', 'tagging', 'attributes', 'torrent', 'legal-hold', 'retention', 'restore', 'select', 'uploadId', 'uploads'];

/** response-* query parameters override these response headers (as on S3, for signed requests only). */
const OVERRIDES: [string, string][] = [
  ['response-content-type', 'content-type'],
  ['response-content-language', 'content-language'],
  ['response-expires', 'expires'],
  ['response-cache-control', 'cache-control'],
  ['response-content-disposition', 'content-disposition'],
  ['response-content-encoding', 'content-encoding'],
];

export const MAX_KEY_BYTES = 1024;

/**
 * GetObject and HeadObject: stat through the worker's cache, conditionals, Range, then the bytes
 * through the cluster reader with backpressure. The status line is written only once the first
 * bytes are in hand, so a failure before that is a proper S3 error; a failure after it cuts the
 * connection (the client sees a short body, never a wrong one).
 */
export async function getObject(ctx: RequestContext, backend: GatewayBackend): Promise<void> {
  const { req, res, bucket, key, query } = ctx;
  for (const name of UNSUPPORTED) if (query.has(name)) throw s3Errors.notImplemented(`${ctx.method} object ?${name}`);
  const versionId = query.get('versionId');
  if (versionId !== undefined && versionId !== 'null') throw s3Errors.invalidArgument('Invalid version id specified', 'versionId', versionId);
  // As S3: a page served from the gateway's origin with a type of the caller's choosing
  // (text/html) would let anyone run script there; signed URLs may, they were given out.
  if (ctx.anonymous && OVERRIDES.some(([param]) => query.has(param))) throw s3Errors.invalidRequest('Request specific response headers cannot be used for anonymous GET requests.');
  // SSE-C: no object here is encrypted with a customer's key. S3 refuses the key for such an
  // object rather than ignore it (a caller relying on its own encryption learns it is not).
  if (req.headers['x-amz-server-side-encryption-customer-algorithm'] !== undefined || req.headers['x-amz-server-side-encryption-customer-key'] !== undefined) {
    throw s3Errors.invalidRequest('The encryption parameters are not applicable to this object.');
  }
  const partNumber = query.get('partNumber');
  if (partNumber !== undefined && partNumber !== '1') throw new S3Error('InvalidPartNumber', 416, 'The requested partnumber is not satisfiable');

  const marker = isMarkerKey(key);
  const info = marker
    ? await statMarker(backend, bucket, checkKey(backend, bucket, key), ctx.now)
    : await backend.stat(bucket, objectPath(backend, bucket, key)).catch((err: unknown) => {
        throw toS3Error(err, { bucket, key });
      });
  const headers: Record<string, string | number> = {
    etag: quoteEtag(info.version),
    'last-modified': new Date(info.mtimeMs).toUTCString(),
    'accept-ranges': 'bytes',
  };
  if (evaluateConditions(req.headers, info.version, info.mtimeMs, ctx.now) === 'not-modified') {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  const range = partNumber === undefined ? selectRange(req.headers, info.size, info.version, info.mtimeMs) : undefined;
  const start = range?.start ?? 0;
  const end = range?.end ?? info.size;
  headers['content-type'] = marker ? DIRECTORY_CONTENT_TYPE : 'application/octet-stream';
  headers['content-length'] = end - start;
  if (range) headers['content-range'] = `bytes ${start}-${end - 1}/${info.size}`;
  if (partNumber !== undefined) headers['x-amz-mp-parts-count'] = 1;
  for (const [param, header] of OVERRIDES) {
    const value = query.get(param);
    if (value !== undefined) headers[header] = sanitizeHeader(value);
  }
  const status = range ? 206 : 200;
  if (ctx.method === 'HEAD' || start === end) {
    res.writeHead(status, headers);
    res.end();
    return;
  }
  const abort = new AbortController();
  const onClose = () => abort.abort(new FanoutError('ABORTED', 'client went away'));
  res.once('close', onClose);
  try {
    const writeHead = () => res.writeHead(status, headers);
    if (backend.send && (await backend.send(res, bucket, info, start, end, abort.signal, writeHead))) return;
    const chunks = backend.read(bucket, info, start, end, abort.signal);
    await sendChunks(res, chunks, writeHead, undefined, backend.written?.bind(backend), backend.clientIdleMs);
  } catch (err) {
    throw toS3Error(err, { bucket, key });
  } finally {
    res.off('close', onClose);
  }
}

/** The key, once its bucket is known and its length allowed. */
function checkKey(backend: GatewayBackend, bucket: string, key: string): string {
  if (!backend.mountNames().includes(bucket)) throw s3Errors.noSuchBucket(bucket);
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw s3Errors.keyTooLong();
  return key;
}

/** The fanout path of a file's key; keys fanout can never hold ("a//b", "../x") are NoSuchKey. */
function objectPath(backend: GatewayBackend, bucket: string, key: string): string {
  checkKey(backend, bucket, key);
  try {
    const target = parseFanoutPath(`/${bucket}/${key}`);
    if (target.path !== key) throw s3Errors.noSuchKey(key);
    return target.path;
  } catch (err) {
    throw toS3Error(err, { bucket, key });
  }
}

/** Header values carry printable Latin-1 only; anything else is dropped rather than crash the response. */
function sanitizeHeader(value: string): string {
  return value.replace(/[^\t\x20-\x7e\xa0-\xff]/g, '').slice(0, 1024);
}
