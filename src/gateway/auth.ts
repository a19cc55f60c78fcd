import type { Clock } from '../core/clock.js';
import { wallClock } from '../core/clock.js';
import { S3Error, s3Errors } from './errors.js';
import {
  ALGORITHM,
  EMPTY_SHA256,
  UNSIGNED_PAYLOAD,
  canonicalRequest,
  formatAmzDate,
  isValidPayloadHash,
  parseAmzDate,
  signatureHex,
  signaturesEqual,
  signingKey,
  stringToSign,
  uriEncode,
} from './sigv4.js';
import { BOTOCORE_SUBRESOURCES, botocoreBucketPaths, signatureV2, stringToSignV2 } from './sigv2.js';

export interface Credential {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface AuthOptions {
  region: string;
  credentials: Credential[];
  /** Requests without any signature are let in (signed requests are still verified). */
  anonymous: boolean;
  clock?: Clock;
}

/** What the authenticator needs of a request; built once per request by the server. */
export interface AuthRequest {
  method: string;
  /** Decoded URL path. */
  path: string;
  /** The path as sent, still percent-encoded (SigV2 signs it so); defaults to `path`. */
  rawPath?: string;
  /** The bucket named by the Host (virtual-hosted style), if any. */
  hostBucket?: string;
  /** Decoded query pairs in order. */
  query: [string, string][];
  headers: Map<string, string[]>;
}

export interface Principal {
  /** null for an anonymous request. */
  accessKeyId: string | null;
  presigned: boolean;
}

/** S3 refuses requests signed more than 15 minutes away from its clock. */
export const MAX_SKEW_MS = 15 * 60_000;
const MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600;
const SERVICE = 's3';

interface Signed {
  accessKeyId: string;
  scopeDate: string;
  region: string;
  service: string;
  terminal: string;
  signedHeaders: string[];
  signature: string;
  amzDate: string;
  payloadHash: string;
}

/**
 * Verifies SigV4 and SigV2 header-signed and presigned (query) requests against the configured
 * access keys. Throws the S3Error a real S3 would answer with; returns who is asking.
 */
export class Authenticator {
  private readonly secrets = new Map<string, string>();
  private readonly keys = new Map<string, Buffer>();
  private readonly clock: Clock;

  constructor(private readonly options: AuthOptions) {
    for (const c of options.credentials) this.secrets.set(c.accessKeyId, c.secretAccessKey);
    this.clock = options.clock ?? wallClock;
  }

  authenticate(req: AuthRequest): Principal {
    const authorization = req.headers.get('authorization')?.[0];
    const queryNames = new Set(req.query.map(([k]) => k));
    const presigned = queryNames.has('X-Amz-Algorithm') || queryNames.has('X-Amz-Signature') || queryNames.has('X-Amz-Credential');
    if (authorization !== undefined && presigned) {
      throw s3Errors.invalidArgument('Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified', 'Authorization', authorization);
    }
    if (authorization !== undefined && /^AWS\s/.test(authorization)) return this.verifyV2Header(req, authorization);
    if (authorization !== undefined) return this.verify(req, this.fromHeader(req, authorization), false);
    if (presigned) return this.verify(req, this.fromQuery(req), true);
    if (queryNames.has('Signature') && queryNames.has('AWSAccessKeyId')) return this.verifyV2Query(req);
    if (this.options.anonymous) return { accessKeyId: null, presigned: false };
    throw s3Errors.accessDenied('Access Denied: this fanout gateway requires an AWS signature, Version 4 or 2 (anonymous access is off)');
  }

  private fromHeader(req: AuthRequest, authorization: string): Signed {
    if (!authorization.startsWith(`${ALGORITHM} `)) {
      throw s3Errors.invalidArgument('Unsupported Authorization Type', 'Authorization', authorization.slice(0, 100));
    }
    const fields = new Map<string, string>();
    for (const part of authorization.slice(ALGORITHM.length + 1).split(',')) {
      const eq = part.indexOf('=');
      if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
    }
    const credential = fields.get('Credential');
    const signedHeaders = fields.get('SignedHeaders');
    const signature = fields.get('Signature');
    if (!credential || !signedHeaders || !signature) {
      throw s3Errors.authorizationMalformed('The authorization header is malformed; it must contain Credential, SignedHeaders and Signature.');
    }
    const amzDate = this.requestDate(req);
    const payloadHash = req.headers.get('x-amz-content-sha256')?.[0];
    if (payloadHash === undefined) throw s3Errors.invalidRequest('Missing required header for this request: x-amz-content-sha256');
    if (!isValidPayloadHash(payloadHash)) {
      throw s3Errors.invalidArgument(
        'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD or a valid sha256 value.',
        'x-amz-content-sha256',
        payloadHash.slice(0, 100),
      );
    }
    return { ...parseCredential(credential, s3Errors.authorizationMalformed), signedHeaders: signedHeaders.split(';'), signature, amzDate, payloadHash };
  }

  private fromQuery(req: AuthRequest): Signed {
    const q = new Map(req.query);
    const algorithm = q.get('X-Amz-Algorithm');
    const credential = q.get('X-Amz-Credential');
    const amzDate = q.get('X-Amz-Date');
    const expires = q.get('X-Amz-Expires');
    const signedHeaders = q.get('X-Amz-SignedHeaders');
    const signature = q.get('X-Amz-Signature');
    if (!algorithm || !credential || !amzDate || !expires || !signedHeaders || !signature) {
      throw s3Errors.authorizationQueryMalformed(
        'Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.',
      );
    }
    if (algorithm !== ALGORITHM) throw s3Errors.authorizationQueryMalformed(`X-Amz-Algorithm only supports "${ALGORITHM}"`);
    if (!/^\d{1,7}$/.test(expires) || Number(expires) > MAX_PRESIGN_EXPIRES_S) {
      throw s3Errors.authorizationQueryMalformed(`X-Amz-Expires must be a number of seconds from 0 to ${MAX_PRESIGN_EXPIRES_S} (a week)`);
    }
    const signedAt = parseAmzDate(amzDate);
    if (Number.isNaN(signedAt)) throw s3Errors.authorizationQueryMalformed('X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd\'T\'HHmmss\'Z\'"');
    const now = this.clock.now();
    if (signedAt - now > MAX_SKEW_MS) throw s3Errors.accessDenied('Request is not valid yet');
    if (now > signedAt + Number(expires) * 1000) {
      throw s3Errors.expired(new Date(signedAt + Number(expires) * 1000).toISOString(), new Date(now).toISOString());
    }
    const names = signedHeaders.split(';');
    // Presigned S3 URLs carry no payload hash unless the signer put one in the query or signed the header.
    const payloadHash =
      q.get('X-Amz-Content-Sha256') ??
      q.get('x-amz-content-sha256') ??
      (names.includes('x-amz-content-sha256') ? req.headers.get('x-amz-content-sha256')?.[0] : undefined) ??
      UNSIGNED_PAYLOAD;
    return { ...parseCredential(credential, s3Errors.authorizationQueryMalformed), signedHeaders: names, signature, amzDate, payloadHash };
  }

  /** x-amz-date, else Date (RFC 1123), checked against the 15-minute window. */
  private requestDate(req: AuthRequest, rfc1123Allowed = false): string {
    const amz = req.headers.get('x-amz-date')?.[0];
    const date = req.headers.get('date')?.[0];
    // SigV2 signers send x-amz-date in the Date header's format (RFC 1123).
    const amzMs = amz === undefined ? NaN : rfc1123Allowed && !/^\d{8}T/.test(amz) ? Date.parse(amz) : parseAmzDate(amz);
    const ms = amz !== undefined ? amzMs : date !== undefined ? Date.parse(date) : NaN;
    if (Number.isNaN(ms)) throw s3Errors.accessDenied('AWS authentication requires a valid Date or x-amz-date header');
    const now = this.clock.now();
    if (Math.abs(now - ms) > MAX_SKEW_MS) throw s3Errors.requestTimeTooSkewed(amz ?? date ?? '', formatAmzDate(now));
    return amz ?? formatAmzDate(ms);
  }

  private verify(req: AuthRequest, signed: Signed, presigned: boolean): Principal {
    const malformed = presigned ? s3Errors.authorizationQueryMalformed : s3Errors.authorizationMalformed;
    const secret = this.secrets.get(signed.accessKeyId);
    if (secret === undefined) throw s3Errors.invalidAccessKeyId(signed.accessKeyId);
    if (signed.scopeDate !== signed.amzDate.slice(0, 8)) {
      throw malformed(`Invalid credential date "${signed.scopeDate}". This date is not the same as X-Amz-Date: "${signed.amzDate.slice(0, 8)}".`);
    }
    if (signed.region !== this.options.region) {
      throw new S3Error(
        presigned ? 'AuthorizationQueryParametersError' : 'AuthorizationHeaderMalformed',
        400,
        `The authorization header is malformed; the region '${signed.region}' is wrong; expecting '${this.options.region}'`,
        { Region: this.options.region },
        { 'x-amz-bucket-region': this.options.region },
      );
    }
    if (signed.service !== SERVICE || signed.terminal !== 'aws4_request') {
      throw malformed(`The credential scope must be DATE/${this.options.region}/${SERVICE}/aws4_request`);
    }
    if (!signed.signedHeaders.includes('host')) throw malformed('The host header must be signed');
    const query = presigned ? req.query.filter(([k]) => k !== 'X-Amz-Signature') : req.query;
    const canonical = canonicalRequest({ method: req.method, path: req.path, query, headers: req.headers, signedHeaders: signed.signedHeaders, payloadHash: signed.payloadHash });
    const scope = `${signed.scopeDate}/${signed.region}/${signed.service}/aws4_request`;
    const toSign = stringToSign(signed.amzDate, scope, canonical);
    const expected = signatureHex(this.key(signed.accessKeyId, secret, signed.scopeDate), toSign);
    if (!signaturesEqual(expected, signed.signature)) {
      throw s3Errors.signatureDoesNotMatch({
        AWSAccessKeyId: signed.accessKeyId,
        StringToSign: toSign,
        SignatureProvided: signed.signature,
        CanonicalRequest: canonical,
      });
    }
    if (!presigned) checkEmptyBody(req, signed.payloadHash);
    return { accessKeyId: signed.accessKeyId, presigned };
  }

  /** SigV2 header: "Authorization: AWS AKID:base64(HMAC-SHA1(secret, StringToSign))". */
  private verifyV2Header(req: AuthRequest, authorization: string): Principal {
    const m = /^AWS\s+([^:\s]+):(\S+)$/.exec(authorization.trim());
    if (!m) throw s3Errors.invalidArgument('AWS authorization header is invalid.  Expected AwsAccessKeyId:signature', 'Authorization', authorization.slice(0, 100));
    const [, accessKeyId, signature] = m as unknown as [string, string, string];
    this.requestDate(req, true);
    const amzDate = req.headers.get('x-amz-date')?.[0];
    const date = req.headers.get('date')?.[0] ?? '';
    // With x-amz-date the Date line is empty (it is signed among the x-amz-* headers); some
    // signers put the Date header there anyway, so that form is accepted too.
    const dates = amzDate !== undefined ? ['', date] : [date];
    this.checkV2(req, accessKeyId, signature, dates, req.headers, false);
    return { accessKeyId, presigned: false };
  }

  /** SigV2 presigned URL: ?AWSAccessKeyId=…&Expires=EPOCH-SECONDS&Signature=…. */
  private verifyV2Query(req: AuthRequest): Principal {
    const q = new Map(req.query);
    const accessKeyId = q.get('AWSAccessKeyId')!;
    const signature = q.get('Signature')!;
    const expires = q.get('Expires') ?? '';
    if (!/^\d{1,12}$/.test(expires)) throw s3Errors.authorizationQueryMalformed('Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters');
    const now = this.clock.now();
    if (now > Number(expires) * 1000) throw s3Errors.expired(new Date(Number(expires) * 1000).toISOString(), new Date(now).toISOString());
    // The week SigV4 URLs are held to (S3 leaves V2's open-ended): a leaked URL dies with it.
    if (Number(expires) * 1000 - now > MAX_PRESIGN_EXPIRES_S * 1000 + MAX_SKEW_MS) {
      throw s3Errors.authorizationQueryMalformed(`Expires must be within ${MAX_PRESIGN_EXPIRES_S} seconds (a week) from now`);
    }
    // Presigners move x-amz-*, Content-Type and Content-MD5 into the query; they are signed as headers.
    const headers = new Map(req.headers);
    for (const [k, v] of req.query) {
      const name = k.toLowerCase();
      if (name.startsWith('x-amz-') || name === 'content-type' || name === 'content-md5') headers.set(name, [v]);
    }
    this.checkV2(req, accessKeyId, signature, [expires], headers, true);
    return { accessKeyId, presigned: true };
  }

  private checkV2(req: AuthRequest, accessKeyId: string, signature: string, dates: string[], headers: Map<string, string[]>, presigned: boolean): void {
    const secret = this.secrets.get(accessKeyId);
    if (secret === undefined) throw s3Errors.invalidAccessKeyId(accessKeyId);
    const amzHeaders = new Map([...headers].filter(([name]) => name.startsWith('x-amz-')));
    const query = req.query.filter(([k]) => !(presigned && (k === 'AWSAccessKeyId' || k === 'Signature' || k === 'Expires')));
    let toSign = '';
    const rawPath = req.rawPath ?? uriEncode(req.path, false);
    const extras = req.query.some(([k]) => BOTOCORE_SUBRESOURCES.has(k)) ? [undefined, BOTOCORE_SUBRESOURCES] : [undefined];
    const paths = [undefined, ...(req.hostBucket ? [] : botocoreBucketPaths(rawPath, req.query))];
    const variants = dates.flatMap((d) => extras.flatMap((e) => paths.map((p) => [d, e, p] as const)));
    for (const [date, extraSubresources, signedPath] of variants) {
      toSign = stringToSignV2({
        extraSubresources,
        signedPath,
        method: req.method,
        rawPath,
        hostBucket: req.hostBucket,
        query,
        contentMd5: headers.get('content-md5')?.[0] ?? '',
        contentType: headers.get('content-type')?.[0] ?? '',
        date,
        amzHeaders,
      });
      if (signaturesEqual(signatureV2(secret, toSign), signature)) return;
    }
    throw s3Errors.signatureDoesNotMatch({ AWSAccessKeyId: accessKeyId, StringToSign: toSign, SignatureProvided: signature });
  }

  /** Signing keys depend only on key, date and region: derived once a day per key. */
  private key(accessKeyId: string, secret: string, date: string): Buffer {
    const id = `${accessKeyId}\n${date}`;
    let key = this.keys.get(id);
    if (!key) {
      if (this.keys.size > 1000) this.keys.clear();
      key = signingKey(secret, date, this.options.region, SERVICE);
      this.keys.set(id, key);
    }
    return key;
  }
}

function parseCredential(credential: string, malformed: (message: string) => S3Error) {
  const parts = credential.split('/');
  if (parts.length !== 5 || !/^\d{8}$/.test(parts[1]!)) {
    throw malformed(`The credential "${credential.slice(0, 200)}" is malformed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".`);
  }
  const [accessKeyId, scopeDate, region, service, terminal] = parts as [string, string, string, string, string];
  return { accessKeyId, scopeDate, region, service, terminal };
}

/**
 * The gateway reads no request bodies (it serves GET and HEAD), so a signed hex payload hash
 * can only be right if it is the hash of nothing.
 */
function checkEmptyBody(req: AuthRequest, payloadHash: string): void {
  if (!/^[0-9a-f]{64}$/.test(payloadHash) || payloadHash === EMPTY_SHA256) return;
  const length = req.headers.get('content-length')?.[0];
  const hasBody = req.headers.has('transfer-encoding') || (length !== undefined && length !== '0');
  if (!hasBody) throw s3Errors.contentSha256Mismatch(payloadHash);
}
