import type { ConnectionOptions } from 'node:tls';
import { deferredTrust } from '../tls/client.js';
import { SlabPool } from './slabs.js';
import { Connection, TransportError, abortReason, type ConnectTarget, type ExchangeTimeouts, type LeanResponse } from './connection.js';

export interface ConnectionPoolOptions {
  /** Connections kept to the origin at most (requests beyond wait for one). */
  connections: number;
  timeouts: ExchangeTimeouts;
  /** TLS options for https origins (ca, servername…), as undici's `connect`. */
  tls?: ConnectionOptions;
  /** Read memory shared with other pools (release() of body chunks goes there). Default: the pool's own. */
  slabs?: SlabPool;
}

/**
 * Idle connections older than this are closed instead of reused: Node servers close keep-alive
 * connections after 5 s of silence, and a request written as that happens is lost (undici uses
 * the same margin).
 */
const IDLE_REUSE_MS = 4000;

/** The largest request body post() sends (a batch of 512 items with long paths fits; anything bigger is not "small"). */
export const MAX_POST_BODY = 1024 * 1024;

/** How a request written on a connection its peer had just closed fails (before any response byte). */
const LOST_ON_REUSE = new Set(['FANOUT_SOCKET_CLOSED', 'FANOUT_HTTP_PARSE', 'ECONNRESET', 'EPIPE']);

interface Waiter {
  resolve: (c: Connection) => void;
  reject: (e: Error) => void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

/**
 * Keep-alive HTTP/1.1 connections to one origin, at most `connections`, each carrying one
 * request at a time. A connection goes back to the pool only after a complete response; any
 * error, abort or short body closes it.
 */
export class ConnectionPool {
  private readonly idle: Connection[] = [];
  private open = 0;
  private readonly all = new Set<Connection>();
  private readonly waiters: Waiter[] = [];
  private closed = false;
  private readonly target: ConnectTarget;
  private readonly hostHeader: string;
  /** Connections allowed at once: options.connections, raised when a session gains a user that wants more. */
  private limit: number;
  readonly slabs: SlabPool;

  constructor(
    origin: string,
    private readonly options: ConnectionPoolOptions,
  ) {
    const url = new URL(origin);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`unsupported protocol ${url.protocol}`);
    const https = url.protocol === 'https:';
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const port = Number(url.port || (https ? 443 : 80));
    const servername = /^[\d.]+$|:/.test(host) ? undefined : host;
    this.target = { host, port, tls: https ? { servername, ...trusting(options.tls) } : undefined };
    this.hostHeader = url.host;
    this.slabs = options.slabs ?? new SlabPool();
    this.limit = options.connections;
  }

  /** Allows up to `connections` at once from now on (never lowers it); waiting requests get the new slots. */
  raise(connections: number): void {
    if (connections <= this.limit) return;
    this.limit = connections;
    while (this.waiters.length > 0 && this.open < this.limit) this.serveWaiter();
  }

  /**
   * GET `path` with `headers`; resolves when the response head has arrived. A request that
   * fails on a reused connection before any response byte (its peer closed it as the request
   * went out) is sent once more on a new one: GET is idempotent.
   */
  async get(path: string, headers: Record<string, string>, signal?: AbortSignal, onInformational?: (statusCode: number) => void): Promise<LeanResponse> {
    return this.exchange(requestHead('GET', path, this.hostHeader, headers), undefined, signal, onInformational);
  }

  /**
   * POST a small body (a batch's JSON: at most MAX_POST_BODY bytes, sent with Content-Length)
   * on the pooled connections, with the same deadlines, abort and errors as get(). Only for
   * requests that read and change nothing (POST /v1/pages): like a GET, one lost on a reused
   * connection before any response byte is sent once more on a new one.
   */
  async post(path: string, headers: Record<string, string>, body: Buffer, signal?: AbortSignal): Promise<LeanResponse> {
    if (body.length > MAX_POST_BODY) throw new TransportError('FANOUT_BAD_HEADER', `a ${body.length}-byte request body (at most ${MAX_POST_BODY})`);
    const head = requestHead('POST', path, this.hostHeader, { ...headers, 'content-length': String(body.length) });
    return this.exchange(head, body, signal);
  }

  private async exchange(head: string, body: Buffer | undefined, signal: AbortSignal | undefined, onInformational?: (statusCode: number) => void): Promise<LeanResponse> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.acquire(signal);
      const reused = conn.uses > 0;
      try {
        return await conn.request(head, this.options.timeouts, signal, (reusable) => this.release(conn, reusable), onInformational, body);
      } catch (err) {
        const lostOnReuse = reused && !conn.responseStarted && LOST_ON_REUSE.has((err as { code?: string }).code ?? '');
        if (attempt === 0 && lostOnReuse && !signal?.aborted) continue;
        throw err;
      }
    }
  }

  /** Closes idle connections now and busy ones when their response ends (a member that left). */
  close(): void {
    this.closed = true;
    for (const conn of this.idle.splice(0)) {
      clearTimeout(conn.idleTimer);
      conn.destroy();
    }
    for (const waiter of this.waiters.splice(0)) {
      waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.reject(new TransportError('FANOUT_SOCKET_CLOSED', 'connection pool closed'));
    }
  }

  /** Closes every connection now, ending responses in flight with an error. */
  destroy(): void {
    this.close();
    for (const conn of this.all) conn.destroy();
  }

  /** Connections open (idle or busy): for tests and status. */
  get size(): number {
    return this.open;
  }

  private async acquire(signal: AbortSignal | undefined): Promise<Connection> {
    if (this.closed) throw new TransportError('FANOUT_SOCKET_CLOSED', 'connection pool closed');
    if (signal?.aborted) throw abortReason(signal);
    const now = performance.now();
    while (this.idle.length > 0) {
      const conn = this.idle.pop()!;
      clearTimeout(conn.idleTimer);
      if (!conn.closed && now - conn.idleSince < IDLE_REUSE_MS) return conn;
      conn.destroy();
    }
    if (this.open < this.limit) return this.connect();
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const at = this.waiters.indexOf(waiter);
          if (at !== -1) this.waiters.splice(at, 1);
          reject(abortReason(signal));
        },
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private async connect(): Promise<Connection> {
    this.open++;
    let counted = true;
    const onClosed = (conn: Connection) => {
      this.all.delete(conn);
      const at = this.idle.indexOf(conn);
      if (at !== -1) this.idle.splice(at, 1);
      if (counted) {
        counted = false;
        this.open--;
        this.serveWaiter();
      }
    };
    try {
      const conn = await Connection.open(this.target, this.options.timeouts.connectMs, this.slabs, onClosed);
      if (this.closed) {
        conn.destroy();
        throw new TransportError('FANOUT_SOCKET_CLOSED', 'connection pool closed');
      }
      this.all.add(conn);
      return conn;
    } catch (err) {
      if (counted) {
        counted = false;
        this.open--;
        this.serveWaiter();
      }
      throw err;
    }
  }

  private release(conn: Connection, reusable: boolean): void {
    conn.uses++;
    if (!reusable || this.closed) {
      conn.destroy(); // its 'close' frees the slot
      return;
    }
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.resolve(conn);
      return;
    }
    conn.idleSince = performance.now();
    conn.idleTimer = setTimeout(() => conn.destroy(), IDLE_REUSE_MS);
    conn.idleTimer.unref();
    this.idle.push(conn);
  }

  /** A slot freed up: the next waiter gets a new connection. */
  private serveWaiter(): void {
    const waiter = this.waiters.shift();
    if (!waiter) return;
    waiter.signal?.removeEventListener('abort', waiter.onAbort);
    if (this.closed) return waiter.reject(new TransportError('FANOUT_SOCKET_CLOSED', 'connection pool closed'));
    this.connect().then(waiter.resolve, waiter.reject);
  }
}

function requestHead(method: 'GET' | 'POST', path: string, host: string, headers: Record<string, string>): string {
  let head = `${method} ${path} HTTP/1.1\r\nhost: ${host}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    // A value with CR or LF would let a caller's string add headers or a second request.
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value) || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) {
      throw new TransportError('FANOUT_BAD_HEADER', `header ${JSON.stringify(name)} cannot be sent`);
    }
    head += `${name}: ${value}\r\n`;
  }
  if (/[\s]/.test(path)) throw new TransportError('FANOUT_BAD_HEADER', 'request path with whitespace');
  return head + '\r\n';
}

/**
 * TLS options that trust what Node's default store would when they bring no CA or context of
 * their own (lib/tls's deferredTrust). Only for https:// pools: reading `secureContext` builds it.
 */
function trusting(tls: ConnectionOptions | undefined): ConnectionOptions {
  return tls?.ca || tls?.secureContext ? tls : { ...deferredTrust(), ...tls };
}
