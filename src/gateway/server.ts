import { randomBytes } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { answerUnparsable, checkHostHeader, closeIfOrphaned, ConnectionCap, foreignHostRefusal, inTurn, isHeaderOverflow, listenHttp, listensOnLoopbackOnly, type ServerLimits } from '../lib/http/index.js';
import type { Logger } from 'pino';
import { wallClock, type Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import { parseListen } from '../lib/config/index.js';
import { CertificateReloader, createApiServer, readTlsPair, type TlsFiles } from '../lib/tls/index.js';
import { Authenticator, type AuthRequest, type Principal } from './auth.js';
import type { FailedAttempts } from '../lib/auth/index.js';
import { getBucket, headBucket, listBuckets, type BucketOptions } from './buckets.js';
import { causeOf, S3Error, s3Errors, toS3Error } from './errors.js';
import { getObject } from './objects.js';
import { headerMap, parseQuery } from './sigv4.js';
import type { GatewayBackend, GatewayConfig, RequestContext } from './types.js';
import { errorXml } from './xml.js';

const MAX_URL_LENGTH = 16 * 1024;

export interface GatewayOptions {
  logger?: Logger;
  clock?: Clock;
  /** Serve HTTPS with this certificate and key (re-read when the files change). */
  tls?: TlsFiles;
  /** Connection cap and client deadlines (the worker's `limits`); beyond the cap: 503 SlowDown. */
  limits?: ServerLimits;
  /**
   * Refused signatures per client address (the worker's auth.attempts, shared with its API): past
   * the limit, signed requests from that address get 503 SlowDown with Retry-After, unchecked.
   */
  attempts?: FailedAttempts;
}

/**
 * The S3-compatible endpoint of one worker, on its own port. Read-only: ListBuckets (a bucket
 * per mount), GetBucketLocation, HeadBucket, ListObjects v1/v2, HeadObject, GetObject; every
 * signed write answers NotImplemented (an anonymous one AccessDenied). Path-style URLs (http://host:port/bucket/key), and
 * virtual-hosted ones when the first label of the Host is a mount (http://bucket.host:port/key).
 * Authentication is AWS SigV4 or SigV2 (header or presigned URL) with the configured keys.
 */
export class S3Gateway {
  private readonly server: Server | HttpsServer;
  private readonly certificates: CertificateReloader | undefined;
  private readonly auth: Authenticator;
  private readonly buckets: BucketOptions;
  private readonly idPrefix = randomBytes(4).toString('hex').toUpperCase();
  private readonly hostId = randomBytes(24).toString('base64');
  private requests = 0;
  private boundUrl = '';
  /** Listening on a loopback address only: requests must name a loopback host (lib/http/loopback.ts). */
  private loopbackOnly = false;
  private readonly cap: ConnectionCap | undefined;
  private readonly clock: Clock;

  constructor(
    private readonly config: GatewayConfig,
    private readonly backend: GatewayBackend,
    private readonly options: GatewayOptions = {},
  ) {
    // Wall time: it dates listings and answers If-Modified-Since against the sources' mtimes.
    this.clock = options.clock ?? wallClock;
    this.auth = new Authenticator({ region: config.region, credentials: config.credentials, anonymous: config.anonymous, clock: options.clock });
    this.buckets = { region: config.region, owner: { id: 'fanout', displayName: 'fanout' }, created: new Date() };
    const tls = options.tls;
    // A connection's requests one after the other (lib/http/pipeline.ts), as the worker's API.
    const handleInTurn = (req: IncomingMessage, res: ServerResponse) => void inTurn(req, res, () => void this.handle(req, res));
    this.server = createApiServer(handleInTurn, { keepAliveTimeout: 30_000, tls: tls && readTlsPair(tls) });
    this.certificates = tls
      ? new CertificateReloader({ files: tls, apply: (pair) => (this.server as HttpsServer).setSecureContext(pair), logger: options.logger, clock: options.clock })
      : undefined;
    this.cap = options.limits ? new ConnectionCap(this.server, options.limits) : undefined;
    // Never ask for a request body: writes are refused before a client sends one.
    this.server.on('checkContinue', handleInTurn);
    answerUnparsable(this.server, (err) => {
      const error = isHeaderOverflow(err)
        ? new S3Error('RequestHeaderSectionTooLarge', 400, 'Your request header section exceeds the maximum allowed size.')
        : s3Errors.invalidRequest(`The HTTP request could not be parsed (${err.code ?? 'malformed'}).`);
      const requestId = this.nextRequestId();
      return { status: error.status, headers: { 'content-type': 'application/xml', 'x-amz-request-id': requestId }, body: errorXml(error, '/', requestId, this.hostId) };
    });
    // Without these listeners node answers an Expect other than 100-continue with a bare 417, and
    // closes a CONNECT's socket with no answer at all: an S3 client gets no error code to read.
    this.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      const error = new S3Error('ExpectationFailed', 417, 'The only expectation supported is 100-continue.', { Expect: String(req.headers.expect).slice(0, 200) });
      this.refuse(req, res, error);
    });
    this.server.on('connect', (req: IncomingMessage, socket: Duplex) => this.refuseConnect(req, socket));
  }

  /** http(s)://host:port once started. */
  get url(): string {
    return this.boundUrl;
  }

  async start(): Promise<void> {
    const { host, port } = parseListen(this.config.listen ?? '127.0.0.1:0');
    this.boundUrl = await listenHttp(this.server, host, port);
    this.loopbackOnly = listensOnLoopbackOnly(this.server);
    await this.certificates?.start();
    this.options.logger?.info({ url: this.boundUrl, region: this.config.region, anonymous: this.config.anonymous }, 'S3 gateway started');
  }

  async stop(): Promise<void> {
    await this.certificates?.stop();
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private nextRequestId(): string {
    return `${this.idPrefix}${(++this.requests).toString(16).toUpperCase().padStart(8, '0')}`;
  }

  private setIds(res: ServerResponse, requestId: string): void {
    res.setHeader('x-amz-request-id', requestId);
    res.setHeader('x-amz-id-2', this.hostId);
    res.setHeader('server', 'fanout');
  }

  /** Answers `error` to a request the gateway will not serve at all. */
  private refuse(req: IncomingMessage, res: ServerResponse, error: S3Error): void {
    const requestId = this.nextRequestId();
    closeIfOrphaned(req, res);
    this.setIds(res, requestId);
    try {
      this.fail(req, res, error, (req.url ?? '/').split('?')[0]!, requestId, { bucket: '', key: '' });
    } catch {
      res.destroy();
    }
  }

  /** CONNECT takes the socket out of HTTP: the answer is written raw, then the connection closes. */
  private refuseConnect(req: IncomingMessage, socket: Duplex): void {
    // node has taken its own listeners off this socket: an unheard reset would crash the worker.
    socket.on('error', () => socket.destroy());
    // A client that never closes its side must not hold the socket (node keeps it half-open).
    (socket as Socket).setTimeout(10_000, () => socket.destroy());
    const requestId = this.nextRequestId();
    const body = errorXml(s3Errors.methodNotAllowed('CONNECT'), req.url ?? '/', requestId, this.hostId);
    const headers = { 'content-type': 'application/xml', 'x-amz-request-id': requestId, 'x-amz-id-2': this.hostId, server: 'fanout', 'content-length': Buffer.byteLength(body), connection: 'close' };
    socket.end(`HTTP/1.1 405 Method Not Allowed\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = this.nextRequestId();
    closeIfOrphaned(req, res);
    this.setIds(res, requestId);
    const method = req.method ?? 'GET';
    let resource = '/';
    let target: { bucket: string; key: string; virtual?: boolean } = { bucket: '', key: '' };
    try {
      if (this.cap?.isExcess(req.socket)) {
        res.shouldKeepAlive = false;
        throw new S3Error('SlowDown', 503, 'Please reduce your request rate.');
      }
      checkHostHeader(req);
      // DNS rebinding (lib/http/loopback.ts): the development keys are printed, so a rebinding
      // page could even sign its requests. AccessDenied, the refusal every S3 client knows.
      const refusal = this.loopbackOnly ? foreignHostRefusal(req.headers.host, 'this gateway') : undefined;
      if (refusal) throw s3Errors.accessDenied(`Access Denied: ${refusal}`);
      const url = req.url ?? '/';
      if (url.length > MAX_URL_LENGTH) throw s3Errors.invalidUri();
      const q = url.indexOf('?');
      const rawPath = q === -1 ? url : url.slice(0, q);
      const pairs = parseQuery(q === -1 ? '' : url.slice(q + 1));
      let path: string;
      try {
        path = decodeURIComponent(rawPath);
      } catch {
        throw s3Errors.invalidUri();
      }
      if (!pairs || !path.startsWith('/')) throw s3Errors.invalidUri();
      resource = path;
      const headers = headerMap(req.rawHeaders);
      target = this.route(path, req.headers.host);
      const hostBucket = target.virtual ? target.bucket : undefined;
      const principal = this.authenticate(req, { method, path, rawPath, hostBucket, query: pairs, headers });
      const query = new Map<string, string>();
      for (const [k, v] of pairs) if (!query.has(k)) query.set(k, v);
      // S3 reads no body on a read. Kept alive, such a connection would have node read and drop
      // whatever the client streams after the answer (a GET with `content-length: 1 TB` went on
      // taking bytes for as long as it sent them): answer, then close.
      if (hasUnreadBody(req)) res.setHeader('connection', 'close');
      await this.dispatch({ req, res, method, bucket: target.bucket, key: target.key, query, anonymous: principal.accessKeyId === null, now: this.clock.now() });
    } catch (err) {
      try {
        this.fail(req, res, err, resource, requestId, target);
      } catch {
        res.destroy(); // the connection is beyond answering; never let this escape as an unhandled rejection
      }
    }
  }

  /**
   * Who signed the request. A wrong signature or an unknown access key counts against the
   * client's address; once it has given too many, its signed requests are refused unchecked
   * (a right signature too, or the answer would still tell a right guess) with SlowDown, 503 and
   * Retry-After, as S3 answers a client over its request rate: botocore (both retry modes) and the
   * SDK v3 back off and retry it (a 503, and SlowDown among their throttling codes); a 429 would
   * be retried by those too, but a client written against S3's own statuses knows only 503.
   * Unsigned requests are not attempts.
   */
  private authenticate(req: IncomingMessage, request: AuthRequest): Principal {
    const attempts = this.options.attempts;
    if (attempts === undefined) return this.auth.authenticate(request);
    if (isSigned(request)) attempts.check(req.socket, 'gateway');
    try {
      return this.auth.authenticate(request);
    } catch (err) {
      if (err instanceof S3Error && (err.code === 'SignatureDoesNotMatch' || err.code === 'InvalidAccessKeyId')) attempts.failed(req.socket);
      throw err;
    }
  }

  private async dispatch(ctx: RequestContext): Promise<void> {
    const { method, bucket, key } = ctx;
    const reading = method === 'GET' || method === 'HEAD';
    if (!reading) {
      // Anonymous access opens reads only. S3 refuses an unsigned write before anything else
      // (403 AccessDenied); "not implemented" would tell a caller without credentials what the
      // gateway does with a write, and an S3 client would show the wrong cause.
      if (ctx.anonymous) throw s3Errors.accessDenied();
      const what = !bucket ? 'service' : key ? 'object' : 'bucket';
      throw s3Errors.notImplemented(`${method} ${what}`);
    }
    if (!bucket) {
      if (key) throw s3Errors.noSuchBucket('');
      if (method === 'HEAD') {
        ctx.res.writeHead(200, { 'content-length': 0 });
        ctx.res.end();
        return;
      }
      return listBuckets(ctx, this.backend, this.buckets);
    }
    checkExpectedOwner(ctx, this.buckets.owner.id);
    if (!key) return method === 'HEAD' ? headBucket(ctx, this.backend, this.buckets) : getBucket(ctx, this.backend, this.buckets);
    return getObject(ctx, this.backend);
  }

  /** Path style "/bucket/key…", or virtual-hosted "bucket.host" + "/key…". */
  private route(path: string, hostHeader: string | undefined): { bucket: string; key: string; virtual?: boolean } {
    const host = (hostHeader ?? '').replace(/:\d+$/, '').replace(/^\[|\]$/g, '').toLowerCase();
    const dot = host.indexOf('.');
    if (dot > 0 && isIP(host) === 0) {
      const label = host.slice(0, dot);
      if (this.backend.mountNames().includes(label)) return { bucket: label, key: path.slice(1), virtual: true };
    }
    const slash = path.indexOf('/', 1);
    if (slash === -1) return { bucket: path.slice(1), key: '' };
    return { bucket: path.slice(1, slash), key: path.slice(slash + 1) };
  }

  private fail(req: IncomingMessage, res: ServerResponse, err: unknown, resource: string, requestId: string, target: { bucket: string; key: string }): void {
    const error: S3Error = toS3Error(err, { bucket: target.bucket, key: target.key || undefined });
    // A client that hung up mid-answer is not the server's fault: no warning per disconnect. The
    // ABORTED may come translated already (getObject translates what its send throws).
    const cause = causeOf(err);
    const clientGone = res.destroyed || (cause instanceof FanoutError && cause.code === 'ABORTED');
    // A throttled guesser is counted (fanout_auth_throttled_total), not logged once per attempt.
    const throttled = cause instanceof FanoutError && cause.code === 'TOO_MANY_ATTEMPTS';
    if (error.status >= 500 && error.code !== 'NotImplemented' && !clientGone && !throttled) {
      this.options.logger?.warn({ code: error.code, err: (cause as Error)?.message, method: req.method, resource, requestId }, 'S3 request failed');
    }
    // The whole answer is already written: cutting now would only break the kept-alive connection
    // under the client's next request ("socket hang up"). Logged above when it is a 5xx.
    if (res.writableEnded) return;
    if (res.headersSent) {
      // Mid-body: cut the connection so the client sees a truncated response, not a short one.
      res.destroy();
      return;
    }
    // Do not read an upload we will not store (a refused PUT): answer, then close the connection.
    if (hasUnreadBody(req)) res.setHeader('connection', 'close');
    const body = req.method === 'HEAD' ? '' : errorXml(error, resource, requestId, this.hostId);
    res.writeHead(error.status, {
      ...error.headers,
      'content-type': 'application/xml',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }
}

/** A request body the client has not finished sending (the gateway never reads one). */
function hasUnreadBody(req: IncomingMessage): boolean {
  const hasBody = (req.headers['content-length'] ?? '0') !== '0' || req.headers['transfer-encoding'] !== undefined;
  return hasBody && !req.readableEnded;
}

/**
 * `x-amz-expected-bucket-owner` (the SDKs' ExpectedBucketOwner; in the query of a presigned URL):
 * a caller that names an owner other than the gateway's is refused as S3 refuses it, rather than
 * served data from a bucket it did not mean to trust.
 */
function checkExpectedOwner(ctx: RequestContext, ownerId: string): void {
  const header = ctx.req.headers['x-amz-expected-bucket-owner'];
  const expected = (Array.isArray(header) ? header[0] : header) ?? ctx.query.get('x-amz-expected-bucket-owner');
  if (expected !== undefined && expected !== ownerId) throw s3Errors.accessDenied();
}

/** Whether a request carries a signature (header or presigned, SigV4 or SigV2): an attempt at a credential. */
function isSigned(request: AuthRequest): boolean {
  return request.headers.has('authorization') || request.query.some(([name]) => name === 'X-Amz-Signature' || name === 'X-Amz-Credential' || name === 'Signature');
}
