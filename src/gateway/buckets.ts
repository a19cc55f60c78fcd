import type { ServerResponse } from 'node:http';
import { decodeToken, encodeToken, listKeys, markerPosition, positionMarker, type Position } from './listing.js';
import { s3Errors, toS3Error } from './errors.js';
import type { GatewayBackend, RequestContext } from './types.js';
import { listBucketsXml, listObjectsV1Xml, listObjectsV2Xml, locationXml, type ListPage, type Owner } from './xml.js';

/** Query parameters a bucket GET may carry; anything else names a subresource we do not serve. */
const LIST_PARAMS = new Set([
  'prefix',
  'delimiter',
  'max-keys',
  'marker',
  'encoding-type',
  'list-type',
  'continuation-token',
  'start-after',
  'fetch-owner',
  'x-id',
  'location',
]);

/** A SigV2 presigned URL's own parameters: authentication, checked before, not a subresource (as x-amz-* are not). */
const SIGV2_QUERY_AUTH = new Set(['AWSAccessKeyId', 'Signature', 'Expires']);

export const MAX_KEYS = 1000;

export interface BucketOptions {
  region: string;
  owner: Owner;
  /** Reported as every bucket's creation date: mounts have none, the gateway's start is honest enough. */
  created: Date;
}

export function listBuckets(ctx: RequestContext, backend: GatewayBackend, options: BucketOptions): void {
  const buckets = backend.mountNames().map((name) => ({ name, created: options.created }));
  sendXml(ctx.res, 200, listBucketsXml(buckets, options.owner));
}

export function headBucket(ctx: RequestContext, backend: GatewayBackend, options: BucketOptions): void {
  requireBucket(backend, ctx.bucket);
  ctx.res.writeHead(200, { 'x-amz-bucket-region': options.region, 'content-length': 0 });
  ctx.res.end();
}

/** GET on a bucket: ?location, ListObjectsV2 (list-type=2) or ListObjects (v1). */
export async function getBucket(ctx: RequestContext, backend: GatewayBackend, options: BucketOptions): Promise<void> {
  const { query, bucket } = ctx;
  for (const name of query.keys()) {
    if (!LIST_PARAMS.has(name) && !SIGV2_QUERY_AUTH.has(name) && !/^x-amz-/i.test(name)) throw s3Errors.notImplemented(`GET bucket ?${name}`);
  }
  requireBucket(backend, bucket);
  if (query.has('location')) return sendXml(ctx.res, 200, locationXml(options.region));
  const listType = query.get('list-type');
  if (listType !== undefined && listType !== '2') throw s3Errors.invalidArgument('Invalid List Type specified in Request', 'list-type', listType);
  const encodingType = query.get('encoding-type');
  if (encodingType !== undefined && encodingType.toLowerCase() !== 'url') {
    throw s3Errors.invalidArgument('Invalid Encoding Method specified in Request', 'encoding-type', encodingType);
  }
  const base = {
    bucket,
    prefix: query.get('prefix') ?? '',
    delimiter: query.get('delimiter') || undefined,
    maxKeys: maxKeys(query.get('max-keys')),
    encodeUrl: encodingType !== undefined,
  };
  if (listType === '2') {
    const token = query.get('continuation-token');
    const startAfter = query.get('start-after');
    const resume = token !== undefined ? decodeToken(token) : startAfter ? { after: startAfter, subtree: false } : undefined;
    const result = await list(backend, bucket, base, resume, ctx.now, ctx.res);
    const next = result.truncated && result.next ? encodeToken(result.next) : undefined;
    const owner = query.get('fetch-owner')?.toLowerCase() === 'true' ? options.owner : undefined;
    return sendXml(ctx.res, 200, listObjectsV2Xml({ ...base, ...result, continuationToken: token, nextContinuationToken: next, startAfter, owner }));
  }
  const marker = query.get('marker') ?? '';
  const result = await list(backend, bucket, base, markerPosition(marker, base.prefix, base.delimiter ?? ''), ctx.now, ctx.res);
  const nextMarker = result.truncated && result.next ? positionMarker(result.next, base.delimiter ?? '') : undefined;
  sendXml(ctx.res, 200, listObjectsV1Xml({ ...base, ...result, marker, nextMarker, owner: options.owner }));
}

async function list(
  backend: GatewayBackend,
  bucket: string,
  base: Pick<ListPage, 'prefix' | 'delimiter' | 'maxKeys'>,
  resume: Position | undefined,
  now: number,
  res: ServerResponse,
) {
  // A client that leaves gives up its place in the source listings it waits for.
  const gone = new AbortController();
  res.once('close', () => res.writableFinished || gone.abort());
  try {
    return await listKeys((dir) => backend.list(bucket, dir, gone.signal), { prefix: base.prefix, delimiter: base.delimiter ?? '', maxKeys: base.maxKeys, resume, now });
  } catch (err) {
    throw toS3Error(err, { bucket });
  }
}

function maxKeys(raw: string | undefined): number {
  if (raw === undefined) return MAX_KEYS;
  if (!/^\d{1,10}$/.test(raw)) throw s3Errors.invalidArgument('Provided max-keys not an integer or within integer range', 'max-keys', raw);
  return Math.min(Number(raw), MAX_KEYS);
}

function requireBucket(backend: GatewayBackend, bucket: string): void {
  if (!backend.mountNames().includes(bucket)) throw s3Errors.noSuchBucket(bucket);
}

export function sendXml(res: ServerResponse, status: number, xml: string): void {
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) });
  res.end(xml);
}
