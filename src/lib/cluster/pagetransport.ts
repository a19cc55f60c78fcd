import type { Dispatcher, Pool } from 'undici';
import { undici } from '../http/undici.js';
import type { ConnectionOptions } from 'node:tls';
import type { Member } from '../../core/types.js';
import { ConnectionPool, MAX_INTERIM_WAIT_MS, SlabPool, TransportError, type LeanResponse } from '../leanhttp/index.js';
import type { PeerTimeouts } from './timeouts.js';
import { progressFloor } from './undicifloor.js';

/**
 * How page requests reach workers. `socket` (the default) is the lean HTTP/1.1 client of
 * lib/leanhttp on net/tls sockets; `undici` is kept selectable (FANOUT_PAGE_TRANSPORT=undici)
 * to compare against and as a fallback should the lean client misbehave somewhere.
 */
export type PageTransportKind = 'socket' | 'undici';

/** A page response whose head has arrived, whatever carried it. */
export interface PageResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: AsyncIterable<Buffer>;
  /** Read after the body has ended. */
  trailers(): Record<string, string | string[] | undefined>;
  /** Gives the response up (its connection is closed unless the response was complete). */
  destroy(): void;
}

export interface PageTransport {
  /** `onInformational`: told of 1xx heads before the response's (102: the worker is filling the page). */
  get(member: Member, path: string, headers: Record<string, string>, signal?: AbortSignal, onInformational?: (statusCode: number) => void): Promise<PageResponse>;
  /** Drops connections to workers not in `urls`. */
  retain(urls: Set<string>): void;
  /**
   * POST a small body (a batch page request) on the same connections, deadlines and errors as
   * get(). The lean transport only: undefined with undici (its callers keep their own client).
   */
  post?(member: Member, path: string, headers: Record<string, string>, body: Buffer, signal?: AbortSignal): Promise<PageResponse>;
  /** A chunk of a page body is no longer used by anyone: its memory may be read into again. */
  release(chunk: Buffer): void;
  /** A view cut out of a body chunk is kept by someone: counted like the chunk, released on its own. */
  share(view: Buffer): void;
  /** Allows up to `connections` per worker from now on (pools the undici transport already built keep theirs). */
  raise(connections: number): void;
  /** Workers this transport holds a connection pool for (a session's counter). */
  poolCount(): number;
  close(): Promise<void>;
}

export interface TransportOptions {
  connections: number;
  timeouts: PeerTimeouts;
  connect?: Pool.Options['connect'];
}

export function pageTransportKind(wanted: string | undefined = process.env.FANOUT_PAGE_TRANSPORT): PageTransportKind {
  return wanted === 'undici' ? 'undici' : 'socket';
}

export function createPageTransport(kind: PageTransportKind, options: TransportOptions): PageTransport {
  return kind === 'undici' ? new UndiciTransport(options) : new SocketTransport(options);
}

class SocketTransport implements PageTransport {
  private readonly pools = new Map<string, ConnectionPool>();
  private closed = false;
  private readonly slabs = new SlabPool();

  constructor(private options: TransportOptions) {}

  async get(member: Member, path: string, headers: Record<string, string>, signal?: AbortSignal, onInformational?: (statusCode: number) => void): Promise<PageResponse> {
    return leanPageResponse(await this.pool(member.url).get(path, headers, signal, onInformational));
  }

  async post(member: Member, path: string, headers: Record<string, string>, body: Buffer, signal?: AbortSignal): Promise<PageResponse> {
    return leanPageResponse(await this.pool(member.url).post(path, headers, body, signal));
  }

  release(chunk: Buffer): void {
    this.slabs.release(chunk);
  }

  share(view: Buffer): void {
    this.slabs.share(view);
  }

  raise(connections: number): void {
    if (connections <= this.options.connections) return;
    this.options = { ...this.options, connections };
    for (const pool of this.pools.values()) pool.raise(connections);
  }

  poolCount(): number {
    return this.pools.size;
  }

  retain(urls: Set<string>): void {
    for (const [url, pool] of this.pools) {
      if (!urls.has(url)) {
        this.pools.delete(url);
        pool.close();
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const pool of this.pools.values()) pool.destroy();
    this.pools.clear();
  }

  private pool(url: string): ConnectionPool {
    let pool = this.pools.get(url);
    if (!pool) {
      // A request after close() (a read moving on to the next worker once its pool was destroyed)
      // opened a pool again that nobody closed: its connections kept the process alive.
      if (this.closed) throw new TransportError('FANOUT_SOCKET_CLOSED', 'the page transport is closed');
      const connect = this.options.connect;
      const tls = typeof connect === 'object' && connect !== null ? (connect as ConnectionOptions) : undefined;
      const timeouts = { ...this.options.timeouts, maxInterimMs: this.options.timeouts.fillingMs };
      pool = new ConnectionPool(url, { connections: this.options.connections, timeouts, tls, slabs: this.slabs });
      this.pools.set(url, pool);
    }
    return pool;
  }
}

/** A lean client's response as a PageResponse (its trailers are read once the body ended). */
function leanPageResponse(response: LeanResponse): PageResponse {
  return { statusCode: response.statusCode, headers: response.headers, body: response.body, trailers: () => response.trailers, destroy: () => response.destroy() };
}

class UndiciTransport implements PageTransport {
  /** A pool per worker, with the body's progress floor (undicifloor.ts) composed onto it. */
  private readonly pools = new Map<string, Dispatcher>();
  private closed = false;

  constructor(private options: TransportOptions) {}

  async get(member: Member, path: string, headers: Record<string, string>, signal?: AbortSignal, onInformational?: (statusCode: number) => void): Promise<PageResponse> {
    const onInfo = onInformational && ((info: { statusCode: number }) => onInformational(info.statusCode));
    // undici restarts its headers deadline on every 1xx head: a peer sending 102s and nothing
    // else held the request for ever. The lean client bounds that itself (maxInterimMs); here the
    // whole wait for the head is bounded the same way, by an abort.
    const { firstByteMs, fillingMs } = this.options.timeouts;
    const capMs = Math.max(firstByteMs, fillingMs ?? MAX_INTERIM_WAIT_MS);
    const cap = new AbortController();
    const timer = setTimeout(() => cap.abort(new TransportError('FANOUT_INTERIM_TIMEOUT', `no final response within ${capMs} ms`)), capMs);
    let response: Dispatcher.ResponseData;
    try {
      response = await this.pool(member.url).request({ method: 'GET', path, signal: signal ? AbortSignal.any([signal, cap.signal]) : cap.signal, headers, onInfo });
    } catch (err) {
      throw cap.signal.aborted && !signal?.aborted ? cap.signal.reason : err;
    } finally {
      clearTimeout(timer);
    }
    const { body } = response;
    return {
      statusCode: response.statusCode,
      headers: response.headers,
      body: body as AsyncIterable<Buffer>,
      trailers: () => response.trailers,
      destroy: () => {
        if (!body.destroyed) body.destroy();
      },
    };
  }

  release(): void {} // undici's chunks are its own fresh buffers

  share(): void {}

  raise(connections: number): void {
    if (connections > this.options.connections) this.options = { ...this.options, connections };
  }

  poolCount(): number {
    return this.pools.size;
  }

  retain(urls: Set<string>): void {
    for (const [url, pool] of this.pools) {
      if (!urls.has(url)) {
        this.pools.delete(url);
        void pool.close().catch(() => {});
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})));
  }

  private pool(url: string): Dispatcher {
    let pool = this.pools.get(url);
    if (!pool) {
      if (this.closed) throw new TransportError('FANOUT_SOCKET_CLOSED', 'the page transport is closed'); // as SocketTransport's
      const { connectMs, firstByteMs, idleMs } = this.options.timeouts;
      pool = new (undici().Pool)(url, {
        connections: this.options.connections,
        pipelining: 1,
        connect: this.options.connect,
        connectTimeout: connectMs,
        headersTimeout: firstByteMs,
        // The floor's windows bound the body, as on the lean client: a stall is a window with no byte.
        bodyTimeout: 0,
      }).compose(progressFloor(idleMs));
      this.pools.set(url, pool);
    }
    return pool;
  }
}
