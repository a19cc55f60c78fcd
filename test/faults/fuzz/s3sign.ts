import { canonicalRequest, EMPTY_SHA256, formatAmzDate, headerMap, signatureHex, signingKey, stringToSign, uriEncode } from '../../../src/gateway/sigv4.js';
import { S3_KEY } from './fixture.js';

/**
 * A small SigV4 signer over the gateway's own primitives, so generated requests pass
 * authentication and reach the bucket and object code. It signs what the gateway will see: the
 * decoded path and decoded query pairs (the gateway decodes once, then re-encodes canonically).
 */
export interface Signable {
  method: string;
  /** Decoded path ("/data/with space.txt"). */
  path: string;
  /** Decoded query pairs. */
  query: [string, string][];
  host: string;
  /** Headers sent besides the signed ones (Range, If-*): not signed, as S3 allows. */
  extra: [string, string][];
}

export function signV4(req: Signable, now = Date.now(), key = S3_KEY): [string, string][] {
  const amzDate = formatAmzDate(now);
  const signedHeaders: [string, string][] = [
    ['host', req.host],
    ['x-amz-content-sha256', EMPTY_SHA256],
    ['x-amz-date', amzDate],
  ];
  const names = signedHeaders.map(([n]) => n);
  const canonical = canonicalRequest({ method: req.method, path: req.path, query: req.query, headers: headerMap(signedHeaders.flat()), signedHeaders: names, payloadHash: EMPTY_SHA256 });
  const scope = `${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
  const signature = signatureHex(signingKey(key.secretAccessKey, amzDate.slice(0, 8), 'us-east-1', 's3'), stringToSign(amzDate, scope, canonical));
  const authorization = `AWS4-HMAC-SHA256 Credential=${key.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  return [...signedHeaders, ['authorization', authorization], ...req.extra];
}

/** A raw query string for decoded pairs, encoded as SigV4 clients do. */
export function encodeQuery(pairs: [string, string][]): string {
  if (pairs.length === 0) return '';
  return '?' + pairs.map(([k, v]) => (v === '' && k !== 'prefix' ? uriEncode(k, true) : `${uriEncode(k, true)}=${uriEncode(v, true)}`)).join('&');
}
