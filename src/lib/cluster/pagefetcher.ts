import type { Agent, Pool } from 'undici';
import { undici } from '../http/undici.js';
import { crc32 } from '../checksum/index.js';
import { FanoutError, errorFromJSON, outOfDescriptors, type ErrorCode } from '../../core/errors.js';
import type { Member, PageRef } from '../../core/types.js';
import { certificateHint } from '../tls/client.js';
import { HEADERS, ROUTES, pagePath } from '../wire/protocol.js';
import { DEFAULT_PEER_TIMEOUTS, describeTimeout, type PeerTimeouts } from './timeouts.js';
import { createPageTransport, pageTransportKind, type PageResponse, type PageTransport, type PageTransportKind } from './pagetransport.js';

/** Header (cached page) or trailer (page streamed while it arrives from the source). The names live in lib/wire. */
export const CHECKSUM_HEADER = HEADERS.checksum;
/**
 * Trailer of a page streamed as a miss whose source read failed after the first bytes: the
 * code (and, URI-encoded, the message) of that failure. It tells a source that cut the body
 * from a worker that died, which would simply cut the connection. Sent only to a request that
 * says `TE: trailers` (as stream() does); any other is cut.
 */
export const ERROR_TRAILER = HEADERS.error;
export const ERROR_MESSAGE_TRAILER = HEADERS.errorMessage;

/** Error bodies larger than this are not read (a misbehaving peer cannot make us buffer much). */
const MAX_ERROR_BODY = 64 * 1024;

/**
 * Fetches whole pages from workers over HTTP and verifies their checksums before handing them
 * on. One keep-alive connection pool per worker, so parallel page reads reuse connections.
 */
export interface PageFetcherOptions {
  /** Connections kept to each worker. Default 8. */
  connectionsPerWorker?: number;
  /** Extra headers sent with every page request (credentials). */
  headers?: () => Record<string, string>;
  /** undici connect options (TLS: ca, servername…). */
  connect?: Pool.Options['connect'];
  /**
   * Whether `direct` page requests are sent as such. Only workers holding the cluster secret
   * may ask for them (others get 403), so by default a `direct` request goes out as an
   * ordinary one.
   */
  direct?: boolean;
  /** Deadlines for connecting, for the response headers and between body chunks. */
  timeouts?: Partial<PeerTimeouts>;
  /** Which HTTP client carries page requests (see pagetransport.ts). Default: FANOUT_PAGE_TRANSPORT, else 'socket'. */
  transport?: PageTransportKind;
}

export class PageFetcher {
  private readonly transport: PageTransport;
  /** Deadlines of page requests (relays derive their stall deadline from them). */
  readonly timeouts: PeerTimeouts;
  /** Health checks go on their own connections: a pool full of stalled page requests must not delay them. */
  private probes: Agent | undefined;

  constructor(protected readonly options: PageFetcherOptions = {}) {
    this.timeouts = { ...DEFAULT_PEER_TIMEOUTS, ...definedOnly(options.timeouts) };
    this.transport = createPageTransport(options.transport ?? pageTransportKind(), {
      connections: options.connectionsPerWorker ?? 8,
      timeouts: this.timeouts,
      connect: options.connect,
    });
  }

  /**
   * Returns the page as the chunks it arrived in: copying them into one page buffer cost more
   * than the network read (fresh 4 MiB buffers fault in page by page).
   */
  async fetch(member: Member, ref: PageRef, expectedLength: number, options: PageRequestOptions = {}): Promise<Buffer[]> {
    const page: Buffer[] = [];
    for await (const chunk of await this.stream(member, ref, expectedLength, options)) {
      page.push(chunk);
      options.onProgress?.('chunk');
    }
    return page;
  }

  /**
   * Opens a page request and returns its bytes as they arrive. Errors the worker answers with
   * are thrown before any byte; the length and checksum are verified after the last byte, so
   * the consumer must treat what it got as provisional until the iteration ends cleanly.
   */
  async stream(member: Member, ref: PageRef, expectedLength: number, options: PageRequestOptions = {}): Promise<AsyncGenerator<Buffer>> {
    const path = pagePath(ref, options.pageSize);
    const headers: Record<string, string> = {
      // A page whose fill fails after its head ends with an error trailer only for a client that
      // says it reads trailers; any other is cut (worker/pagesend.ts failAfterHead).
      te: 'trailers',
      ...this.options.headers?.(),
      ...(options.direct && this.options.direct ? { [DIRECT_HEADER]: '1' } : {}),
      ...(options.preload ? { [HEADERS.trafficClass]: 'preload' } : {}),
    };
    const onProgress = options.onProgress;
    if (onProgress) headers[HEADERS.progress] = '1';
    const onInformational = onProgress && ((status: number) => status === 102 && onProgress('filling'));
    let response;
    try {
      response = await this.transport.get(member, path, headers, options.signal, onInformational);
    } catch (err) {
      throw this.unavailable(member, err);
    }
    options.onProgress?.('headers');
    if (response.statusCode !== 200) throw await this.errorResponse(member, response);
    return verifiedBody(member, ref, expectedLength, response, (err) => this.unavailable(member, err));
  }

  /** Does the worker answer /healthz within `timeoutMs`? (A stopped process does not; a busy one does.) */
  async probe(member: Member, timeoutMs = 1000): Promise<boolean> {
    const { Agent, request } = undici();
    // Each call's signal is its deadline (callers adapt it to the member's load); the agent's
    // own timeouts only bound a call that forgot one.
    const bound = Math.max(timeoutMs, 30_000);
    this.probes ??= new Agent({ connect: this.options.connect, connections: 2, connectTimeout: bound, headersTimeout: bound, bodyTimeout: bound });
    try {
      const response = await request(`${member.url}${ROUTES.health}`, { dispatcher: this.probes, headers: this.options.headers?.(), signal: AbortSignal.timeout(timeoutMs) });
      await response.body.dump();
      return response.statusCode === 200;
    } catch {
      return false;
    }
  }

  /**
   * Gives back a chunk from fetch() or stream() once nothing will read it again (its bytes are
   * written out and no view of it is kept): its memory is then read into again instead of fresh
   * memory being faulted in. Optional: chunks never released are garbage-collected. Releasing a
   * chunk still in use would let the next read overwrite it.
   */
  release(chunk: Buffer): void {
    this.transport.release(chunk);
  }

  /**
   * POST a small body on the page connections (batch page requests, client/batchreader.ts), or
   * undefined when the transport cannot (undici: the caller keeps its own client). Its errors are
   * the transport's, unmapped: the caller falls back to page requests whatever they are.
   */
  post(member: Member, path: string, headers: Record<string, string>, body: Buffer, signal?: AbortSignal): Promise<PageResponse> | undefined {
    return this.transport.post?.(member, path, headers, body, signal);
  }

  /** Whether post() can carry requests (the lean transport). */
  get canPost(): boolean {
    return this.transport.post !== undefined;
  }

  /** A view cut out of a chunk from post()'s body, kept by someone: release() it on its own like a chunk. */
  share(view: Buffer): void {
    this.transport.share(view);
  }

  /** Allows up to `connections` per worker from now on (a session's new user wants more in flight). */
  raiseConnections(connections: number): void {
    this.transport.raise(connections);
  }

  /** Workers with a connection pool open (one per worker however many readers share this fetcher). */
  poolCount(): number {
    return this.transport.poolCount();
  }

  /** Drops pools of workers that left the cluster. */
  retain(members: Member[]): void {
    this.transport.retain(new Set(members.map((m) => m.url)));
  }

  async close(): Promise<void> {
    await this.transport.close();
    await this.probes?.destroy().catch(() => {});
  }

  /**
   * A non-200 answer as the error the worker meant: its JSON code when there is one (source
   * errors must keep theirs, so the caller neither blames nor abandons a healthy worker).
   */
  private async errorResponse(member: Member, response: PageResponse): Promise<FanoutError> {
    const { statusCode, headers } = response;
    const text = await boundedText(response).catch(() => '');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const headerCode = headers[ERROR_TRAILER];
    return this.asWorkerMeant(member, errorFromJSON(parsed ?? (typeof headerCode === 'string' ? { error: { code: headerCode } } : undefined), statusCode));
  }

  /**
   * The error a worker answered, as this fetcher's callers take it (also for a worker's own
   * page fills taken in-process: worker/localpages.ts).
   */
  protected asWorkerMeant(member: Member, error: FanoutError): FanoutError {
    // A 499 from a worker means it gave the page up (it is stopping): ours are local aborts only.
    if (error.code === 'ABORTED') return new FanoutError('WORKER_UNAVAILABLE', `worker ${member.id} gave the page up: ${error.message}`);
    // A worker's fetcher sends the cluster secret: a member that refuses it is not of this
    // cluster (another auth.clusterSecret joined the same etcd prefix). Taken for definitive, its
    // refusal failed every read of its pages through every worker; as a worker fault, the page
    // is read around it (a relay reads the source).
    if (this.options.direct && (error.code === 'FORBIDDEN' || error.code === 'UNAUTHENTICATED')) {
      return new FanoutError('WORKER_UNAVAILABLE', `worker ${member.id} (${member.url}) refused this cluster's peer credential (${error.message}): does it have another auth.clusterSecret?`);
    }
    if (error.code === 'WORKER_UNAVAILABLE' && !error.message.includes(member.id)) {
      return new FanoutError('WORKER_UNAVAILABLE', `worker ${member.id} (${member.url}): ${error.message}`);
    }
    return error;
  }

  protected unavailable(member: Member, err: unknown): FanoutError {
    if (err instanceof FanoutError) return err;
    const code = (err as { code?: string })?.code;
    if ((err as Error)?.name === 'AbortError' || code === 'UND_ERR_ABORTED') {
      return new FanoutError('ABORTED', 'page read aborted', { cause: err });
    }
    // No fd left here for the connection (EMFILE) is this process at a limit, not the member
    // failing: before, it was WORKER_UNAVAILABLE, so a relay took the owner for down and read the
    // source itself (a second source read, failing the same way), and a reader marked it failed.
    // (The fetcher also runs in SDK clients, the mount and the CLI: "this process".)
    const what = `no connection to worker ${member.id} (${member.url})`;
    const ours = outOfDescriptors(err, what, { who: 'this process' });
    if (ours) return ours;
    const timeout = describeTimeout(code, this.timeouts);
    const why = timeout ?? `failed: ${(err as Error)?.message}${certificateHint(err)}`;
    return new FanoutError('WORKER_UNAVAILABLE', `worker ${member.id} (${member.url}) ${why}`, { cause: err });
  }
}

export interface PageRequestOptions {
  signal?: AbortSignal;
  /** Ask the worker to read the source itself rather than forward to the page's owner (hedges, failover). */
  direct?: boolean;
  /** A preload (`fanout load`, sync prefetch): a line's budget serves it after waiting reads. */
  preload?: boolean;
  /** The page size `ref.index` counts in: sent, so a worker with another one refuses (PAGE_SIZE_MISMATCH). */
  pageSize?: number;
  /**
   * Told when the response headers arrive, after each body chunk, and when the worker says the
   * page is being filled (a 102 before the headers): hedging watches progress.
   */
  onProgress?: (what: PageProgress) => void;
}

export type PageProgress = 'filling' | 'headers' | 'chunk';

/** Set on requests that must not be forwarded again (loop guard) or that want a direct source read. */
export const DIRECT_HEADER = HEADERS.direct;

async function* verifiedBody(
  member: Member,
  ref: PageRef,
  expectedLength: number,
  response: PageResponse,
  unavailable: (err: unknown) => FanoutError,
): AsyncGenerator<Buffer> {
  const { headers, body } = response;
  let received = 0;
  let crc = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (received + chunk.length > expectedLength) {
        throw new FanoutError('CHECKSUM_MISMATCH', `worker ${member.id} sent more than ${expectedLength} bytes for a page`);
      }
      crc = crc32(chunk, crc);
      received += chunk.length;
      yield chunk;
    }
  } catch (err) {
    throw unavailable(err);
  } finally {
    if (received !== expectedLength) response.destroy();
  }
  const trailers = response.trailers();
  const failure = trailerError(trailers);
  if (failure) throw failure;
  if (received !== expectedLength) {
    throw new FanoutError('WORKER_UNAVAILABLE', `worker ${member.id} sent ${received} of ${expectedLength} page bytes`);
  }
  const expected = headers[CHECKSUM_HEADER] ?? trailers[CHECKSUM_HEADER];
  if (typeof expected !== 'string' || !/^[0-9a-f]{1,8}$/i.test(expected) || parseInt(expected, 16) !== crc) {
    throw new FanoutError('CHECKSUM_MISMATCH', `page ${ref.index} of /${ref.mount}/${ref.path} from ${member.id} failed its checksum`);
  }
}

/** The failure a worker reported in the trailers of a page it could not finish, if any. */
function trailerError(trailers: Record<string, string | string[] | undefined>): FanoutError | undefined {
  const code = trailers[ERROR_TRAILER];
  if (typeof code !== 'string' || code === '') return undefined;
  const raw = trailers[ERROR_MESSAGE_TRAILER];
  let message = `the worker's source read failed (${code})`;
  if (typeof raw === 'string') {
    try {
      message = decodeURIComponent(raw);
    } catch {
      message = raw;
    }
  }
  const error = errorFromJSON({ error: { code, message } }, 502);
  return error.code === 'ABORTED' ? new FanoutError('WORKER_UNAVAILABLE', message) : error;
}

/** Encodes a failure as page trailers (the worker side of trailerError). */
export function errorTrailers(code: ErrorCode, message: string): Record<string, string> {
  return { [ERROR_TRAILER]: code, [ERROR_MESSAGE_TRAILER]: encodeURIComponent(message.slice(0, 1000)) };
}

async function boundedText(response: PageResponse): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of response.body) {
    size += chunk.length;
    if (size > MAX_ERROR_BODY) {
      response.destroy();
      break;
    }
    parts.push(chunk);
  }
  return Buffer.concat(parts).toString('utf8');
}

function definedOnly<T extends object>(value: T | undefined): Partial<T> {
  return Object.fromEntries(Object.entries(value ?? {}).filter(([, v]) => v !== undefined)) as Partial<T>;
}
