import { createHmac } from 'node:crypto';

/**
 * AWS Signature Version 2 for S3, the pure parts: the string to sign and its HMAC-SHA1.
 * awscli v1, boto3's default presigner and older SDKs still sign this way.
 * https://docs.aws.amazon.com/AmazonS3/latest/userguide/RESTAuthentication.html
 */

/** Query parameters that are part of the signed resource (the rest are not). */
const SIGNED_SUBRESOURCES = new Set([
  'accelerate', 'acl', 'analytics', 'cors', 'delete', 'inventory', 'lifecycle', 'location', 'logging', 'metrics',
  'notification', 'object-lock', 'partNumber', 'policy', 'replication', 'requestPayment', 'restore', 'select',
  'select-type', 'tagging', 'torrent', 'uploadId', 'uploads', 'versionId', 'versioning', 'versions', 'website',
  'response-cache-control', 'response-content-disposition', 'response-content-encoding', 'response-content-language',
  'response-content-type', 'response-expires',
]);

/**
 * botocore signs the query its operation's URI template carries (ListObjectsV2's "?list-type=2")
 * as a sub-resource too; S3 accepts both forms, so the gateway does.
 */
export const BOTOCORE_SUBRESOURCES = new Set(['list-type']);

export interface V2Input {
  method: string;
  /** The path exactly as sent (still percent-encoded), "/bucket/key" in path style. */
  rawPath: string;
  /** The bucket when it came from the Host (virtual-hosted style): the resource starts with it. */
  hostBucket?: string;
  /** Decoded query pairs. */
  query: [string, string][];
  /** Content-MD5, Content-Type and the date (or, presigned, Expires), in that order. */
  contentMd5: string;
  contentType: string;
  date: string;
  /** Every x-amz-* header (lower-case name → values). */
  amzHeaders: Map<string, string[]>;
  /** Query parameters signed besides the standard sub-resources. */
  extraSubresources?: Set<string>;
  /** The path the signer put in the resource when it is not the one sent (see botocoreBucketPaths). */
  signedPath?: string;
}

/**
 * The paths botocore signs for a request on a bucket itself, sent path-style as "/bucket": recent
 * versions sign "/bucket/" (S3 accepts it); older ones (Debian's 1.29) sign the operation's URI
 * template, "/bucket?location", and then append the sub-resource again. Empty for any other path.
 */
export function botocoreBucketPaths(rawPath: string, query: [string, string][]): string[] {
  if (!/^\/[^/]+$/.test(rawPath)) return [];
  return query.some(([k]) => k === 'location') ? [`${rawPath}/`, `${rawPath}?location`] : [`${rawPath}/`];
}

/** x-amz-* headers sorted by name, one "name:v1,v2" line each. */
export function canonicalAmzHeaders(headers: Map<string, string[]>): string {
  return [...headers.keys()]
    .filter((name) => name.startsWith('x-amz-'))
    .sort()
    .map((name) => `${name}:${headers.get(name)!.map((v) => v.trim().replace(/\s+/g, ' ')).join(',')}\n`)
    .join('');
}

/** [/bucket]/path[?subresource[=value]&…], the signed sub-resources sorted by name. */
export function canonicalResource(input: Pick<V2Input, 'rawPath' | 'hostBucket' | 'query' | 'extraSubresources' | 'signedPath'>): string {
  const path = input.signedPath ?? (input.hostBucket ? `/${input.hostBucket}${input.rawPath}` : input.rawPath);
  const sub = input.query
    .filter(([k]) => SIGNED_SUBRESOURCES.has(k) || input.extraSubresources?.has(k))
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([k, v]) => (v === '' ? k : `${k}=${v}`));
  return sub.length > 0 ? `${path}?${sub.join('&')}` : path;
}

export function stringToSignV2(input: V2Input): string {
  return [input.method, input.contentMd5, input.contentType, input.date, canonicalAmzHeaders(input.amzHeaders) + canonicalResource(input)].join('\n');
}

/** Base64 HMAC-SHA1 of the string to sign with the secret key. */
export function signatureV2(secretAccessKey: string, toSign: string): string {
  return createHmac('sha1', secretAccessKey).update(toSign, 'utf8').digest('base64');
}
