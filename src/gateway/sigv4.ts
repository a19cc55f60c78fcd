import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * AWS Signature Version 4, the pure parts: canonical request, string to sign, signing key,
 * signature. https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
 * and the S3 specifics (no path normalization, payload hash from x-amz-content-sha256).
 */
export const ALGORITHM = 'AWS4-HMAC-SHA256';
export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** The values x-amz-content-sha256 may take besides a hex SHA-256. */
const PAYLOAD_KEYWORDS = new Set([
  UNSIGNED_PAYLOAD,
  'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
  'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
  'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER',
  'STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD',
  'STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER',
]);

export function isValidPayloadHash(value: string): boolean {
  return PAYLOAD_KEYWORDS.has(value) || /^[0-9a-f]{64}$/.test(value);
}

/** AWS UriEncode: every byte but A-Z a-z 0-9 - _ . ~ as %XX (upper case); "/" kept unless encodeSlash. */
export function uriEncode(text: string, encodeSlash: boolean): string {
  const encoded = encodeURIComponent(text).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  return encodeSlash ? encoded : encoded.replace(/%2F/g, '/');
}

/**
 * Splits a raw query string into decoded [name, value] pairs, in order. "+" is a space, as S3
 * reads a query (form encoding): "prefix=a+b" lists "a b", and a signature over it is checked with
 * "a%20b" in the canonical query, which is what clients that send "+" sign (the AWS SDK for Java
 * v1, curl --aws-sigv4). A plus is "%2B", as every SDK sends it. Returns undefined for malformed
 * percent-encoding.
 */
export function parseQuery(rawQuery: string): [string, string][] | undefined {
  const pairs: [string, string][] = [];
  const decode = (text: string) => decodeURIComponent(text.replace(/\+/g, ' '));
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    try {
      pairs.push(eq === -1 ? [decode(part), ''] : [decode(part.slice(0, eq)), decode(part.slice(eq + 1))]);
    } catch {
      return undefined;
    }
  }
  return pairs;
}

export interface CanonicalInput {
  method: string;
  /** The decoded URL path ("/bucket/my key.bin"); encoded once here, as S3 clients sign it. */
  path: string;
  /** Decoded query pairs, without X-Amz-Signature. */
  query: [string, string][];
  /** Lower-case header name → values, in the order received. */
  headers: Map<string, string[]>;
  /** Lower-case names, as listed in SignedHeaders. */
  signedHeaders: string[];
  payloadHash: string;
}

export function canonicalQuery(pairs: [string, string][]): string {
  return pairs
    .map(([k, v]) => [uriEncode(k, true), uriEncode(v, true)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

/** Values trimmed, inner runs of spaces collapsed, repeated headers joined with ",". */
export function canonicalHeaderValue(values: string[] | undefined): string {
  return (values ?? []).map((v) => v.trim().replace(/\s+/g, ' ')).join(',');
}

export function canonicalRequest(input: CanonicalInput): string {
  const headers = input.signedHeaders.map((name) => `${name}:${canonicalHeaderValue(input.headers.get(name))}\n`).join('');
  return [
    input.method,
    uriEncode(input.path || '/', false),
    canonicalQuery(input.query),
    headers,
    input.signedHeaders.join(';'),
    input.payloadHash,
  ].join('\n');
}

export function sha256Hex(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}

/** scope = DATE/REGION/SERVICE/aws4_request; amzDate = YYYYMMDDTHHMMSSZ. */
export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return `${ALGORITHM}\n${amzDate}\n${scope}\n${sha256Hex(canonical)}`;
}

export function signingKey(secretAccessKey: string, date: string, region: string, service: string): Buffer {
  const kDate = createHmac('sha256', `AWS4${secretAccessKey}`).update(date).digest();
  const kRegion = createHmac('sha256', kDate).update(region).digest();
  const kService = createHmac('sha256', kRegion).update(service).digest();
  return createHmac('sha256', kService).update('aws4_request').digest();
}

export function signatureHex(key: Buffer, toSign: string): string {
  return createHmac('sha256', key).update(toSign).digest('hex');
}

/** Compares two signatures in time independent of where they differ. */
export function signaturesEqual(expected: string, provided: string): boolean {
  const a = Buffer.from(expected, 'latin1');
  const b = Buffer.from(provided, 'latin1');
  if (a.length !== b.length) {
    timingSafeEqual(a, a); // same work either way; only the (public) length leaks
    return false;
  }
  return timingSafeEqual(a, b);
}

/** 20130524T000000Z → epoch ms, or NaN. */
export function parseAmzDate(text: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!m) return NaN;
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const ms = Date.UTC(y, mo - 1, d, h, mi, s);
  // Reject 20130231 and friends, which Date.UTC would roll over.
  return new Date(ms).getUTCDate() === d && new Date(ms).getUTCHours() === h ? ms : NaN;
}

/** epoch ms → 20130524T000000Z */
export function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

/** Collects a request's raw header list (name, value, name, value…) by lower-case name. */
export function headerMap(rawHeaders: string[]): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const list = map.get(name);
    if (list) list.push(rawHeaders[i + 1]!);
    else map.set(name, [rawHeaders[i + 1]!]);
  }
  return map;
}
