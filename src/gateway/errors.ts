import { FanoutError } from '../core/errors.js';
import { ThrottledError } from '../lib/auth/index.js';

/**
 * An S3 error: the `Code` S3 clients branch on, its HTTP status, and the extra elements S3 puts
 * in the XML body (Key, BucketName, Condition…). Every failure in the gateway becomes one of
 * these at the edge (see toS3Error).
 */
export class S3Error extends Error {
  override readonly name = 'S3Error';

  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly fields: Record<string, string> = {},
    /** Extra response headers (x-amz-bucket-region on a wrong region…). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const s3Errors = {
  accessDenied: (message = 'Access Denied') => new S3Error('AccessDenied', 403, message),
  invalidAccessKeyId: (accessKeyId: string) =>
    new S3Error('InvalidAccessKeyId', 403, 'The AWS Access Key Id you provided does not exist in our records.', { AWSAccessKeyId: accessKeyId }),
  signatureDoesNotMatch: (fields: Record<string, string>) =>
    new S3Error(
      'SignatureDoesNotMatch',
      403,
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
      fields,
    ),
  requestTimeTooSkewed: (requestTime: string, serverTime: string) =>
    new S3Error('RequestTimeTooSkewed', 403, 'The difference between the request time and the current time is too large.', {
      RequestTime: requestTime,
      ServerTime: serverTime,
      MaxAllowedSkewMilliseconds: '900000',
    }),
  expired: (expires: string, serverTime: string) =>
    new S3Error('AccessDenied', 403, 'Request has expired', { Expires: expires, ServerTime: serverTime }),
  authorizationMalformed: (message: string, fields: Record<string, string> = {}, headers: Record<string, string> = {}) =>
    new S3Error('AuthorizationHeaderMalformed', 400, message, fields, headers),
  authorizationQueryMalformed: (message: string) => new S3Error('AuthorizationQueryParametersError', 400, message),
  invalidRequest: (message: string) => new S3Error('InvalidRequest', 400, message),
  invalidArgument: (message: string, name?: string, value?: string) =>
    new S3Error('InvalidArgument', 400, message, name === undefined ? {} : { ArgumentName: name, ArgumentValue: value ?? '' }),
  contentSha256Mismatch: (provided: string) =>
    new S3Error('XAmzContentSHA256Mismatch', 400, 'The provided x-amz-content-sha256 header does not match what was computed.', {
      ClientComputedContentSHA256: provided,
    }),
  noSuchBucket: (bucket: string) => new S3Error('NoSuchBucket', 404, 'The specified bucket does not exist', { BucketName: bucket }),
  noSuchKey: (key: string) => new S3Error('NoSuchKey', 404, 'The specified key does not exist.', { Key: key }),
  invalidRange: (size: number, range: string) =>
    new S3Error('InvalidRange', 416, 'The requested range is not satisfiable', { RangeRequested: range, ActualObjectSize: String(size) }, {
      'content-range': `bytes */${size}`,
    }),
  invalidUri: () => new S3Error('InvalidURI', 400, "Couldn't parse the specified URI."),
  preconditionFailed: (condition: string) =>
    new S3Error('PreconditionFailed', 412, 'At least one of the pre-conditions you specified did not hold', { Condition: condition }),
  notImplemented: (what: string) =>
    new S3Error('NotImplemented', 501, `${what} is not implemented: the fanout S3 gateway is read-only (GET and HEAD of buckets and objects)`),
  methodNotAllowed: (method: string) =>
    new S3Error('MethodNotAllowed', 405, 'The specified method is not allowed against this resource.', { Method: method }),
  keyTooLong: () => new S3Error('KeyTooLongError', 400, 'Your key is too long'),
  internal: (message = 'We encountered an internal error. Please try again.') => new S3Error('InternalError', 500, message),
  unavailable: (message: string) => new S3Error('ServiceUnavailable', 503, message),
};

/**
 * Translates anything thrown while serving a request. Fanout's own codes map to what an S3
 * client expects: a missing mount is NoSuchBucket, a missing file (or a directory, or a path
 * fanout can never hold such as "a//b") is NoSuchKey, a source that changed mid-read is a
 * retryable 503.
 */
export function toS3Error(err: unknown, ctx: { bucket?: string; key?: string } = {}): S3Error {
  if (err instanceof S3Error) return err;
  const error = translate(err, ctx);
  // Kept for the edge: an ABORTED (the client went away) is no server error, whatever S3 code it maps to.
  error.cause = err;
  return error;
}

/** The error that lies under a translated one (see toS3Error). */
export function causeOf(err: unknown): unknown {
  return err instanceof S3Error && err.cause !== undefined ? err.cause : err;
}

function translate(err: unknown, ctx: { bucket?: string; key?: string }): S3Error {
  if (!(err instanceof FanoutError)) return s3Errors.internal();
  switch (err.code) {
    case 'UNKNOWN_MOUNT':
      return s3Errors.noSuchBucket(ctx.bucket ?? '');
    case 'NOT_FOUND':
    case 'IS_A_DIRECTORY':
    case 'NOT_A_DIRECTORY':
    case 'INVALID_PATH':
      return ctx.key !== undefined ? s3Errors.noSuchKey(ctx.key) : s3Errors.invalidArgument(err.message);
    case 'RANGE_NOT_SATISFIABLE':
      return new S3Error('InvalidRange', 416, 'The requested range is not satisfiable');
    case 'INVALID_ARGUMENT':
    case 'INVALID_RANGE':
    case 'NOT_LISTABLE':
      return s3Errors.invalidArgument(err.message);
    case 'REQUEST_TOO_LARGE':
      return s3Errors.invalidRequest(err.message);
    case 'SOURCE_CHANGED':
      return s3Errors.unavailable('The object changed at its source while being read; retry the request.');
    case 'SOURCE_UNVERSIONED':
      return new S3Error('InvalidObjectState', 403, err.message);
    // Say what failed: "reduce your request rate" (SlowDown) is only true when the worker is at a limit.
    case 'SOURCE_ERROR':
    case 'SOURCE_TRUNCATED':
      return s3Errors.unavailable(`The source of this object failed; retry the request: ${err.message}`);
    case 'WORKER_UNAVAILABLE':
    case 'NO_WORKERS':
      return s3Errors.unavailable(`The cache cluster could not serve this object; retry the request: ${err.message}`);
    case 'OVERLOADED':
      return new S3Error('SlowDown', 503, `Please reduce your request rate: ${err.message}`);
    // An address throttled for its refused signatures (lib/auth/attempts.ts): S3's "back off".
    case 'TOO_MANY_ATTEMPTS':
      return new S3Error('SlowDown', 503, `Please reduce your request rate: ${err.message}`, {}, err instanceof ThrottledError ? { 'retry-after': String(err.retryAfterSeconds) } : {});
    case 'CHECKSUM_MISMATCH':
      return s3Errors.internal(`A page of this object failed its checksum; retry the request: ${err.message}`);
    case 'PAGE_SIZE_MISMATCH':
      return s3Errors.internal(`The cache cluster's workers disagree on the page size: ${err.message}`);
    case 'STORE_FULL':
    case 'DISK_FULL':
      return new S3Error('SlowDown', 503, `Please reduce your request rate: ${err.message}`);
    default:
      return s3Errors.internal();
  }
}
