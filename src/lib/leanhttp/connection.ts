import { connect as netConnect, type Socket } from 'node:net';
import { createRequire } from 'node:module';
import type { ConnectionOptions } from 'node:tls';
import { BodyQueue } from './body.js';
import { ResponseParser, type ResponseHead } from './parser.js';
import type { SlabPool, SlabReader } from './slabs.js';
import { ProgressWindow } from './window.js';

/** node:tls is loaded for https:// workers only (most of a short `fanout cat`'s start-up is module loading). */
const tlsConnect = (options: ConnectionOptions): import('node:tls').TLSSocket => (createRequire(import.meta.url)('node:tls') as typeof import('node:tls')).connect(options);

/**
 * The sockets these connections made. The etcd connect tracker (lib/membership/connects.ts) ends
 * connects to etcd still pending that gRPC keeps no handle on; these have their own deadline and
 * are left alone (one ended there would wait out that deadline on a link that works).
 */
const ownSockets = new WeakSet<Socket>();

/** Whether `socket` was made by a lean HTTP connection (connects.ts leaves it alone). */
export function isLeanSocket(socket: Socket): boolean {
  return ownSockets.has(socket);
}

/** Deadlines of one exchange, as the page fetcher's `timeouts`. */
export interface ExchangeTimeouts {
  connectMs: number;
  firstByteMs: number;
  idleMs: number;
  /**
   * How long after the request 1xx heads may keep the answer coming (MAX_INTERIM_WAIT_MS by
   * default); never less than firstByteMs. Past it: FANOUT_INTERIM_TIMEOUT.
   */
  maxInterimMs?: number;
}

/** An error of the transport with a stable code (mapped to a worker failure by the caller). */
export class TransportError extends Error {
  constructor(
    readonly code: 'FANOUT_CONNECT_TIMEOUT' | 'FANOUT_FIRST_BYTE_TIMEOUT' | 'FANOUT_INTERIM_TIMEOUT' | 'FANOUT_IDLE_TIMEOUT' | 'FANOUT_SOCKET_CLOSED' | 'FANOUT_BAD_HEADER' | 'FANOUT_ABANDONED' | 'FANOUT_TOO_LARGE',
    message: string,
  ) {
    super(message);
  }
}

/** A response whose head has arrived; its body follows through `body`, its trailers once that ends. */
export interface LeanResponse {
  statusCode: number;
  headers: Record<string, string>;
  body: BodyQueue;
  /** Filled when the body has ended (chunked trailers; empty otherwise). */
  trailers: Record<string, string>;
  /** Gives the response up: the connection is closed unless the response was already complete. */
  destroy(): void;
}

/**
 * How long 1xx heads (a worker's 102 while it fills a page, every 5 s) keep an exchange waiting
 * for its answer by default: a fill queued longer than this behind source and line limits is given
 * up and asked elsewhere, as a silent one is after firstByteMs. Readers of the SDK wait this long
 * (they have no other way to the page than the workers); a relaying worker has its own, shorter
 * `timeouts.peerFilling` (it can read the source itself instead).
 */
export const MAX_INTERIM_WAIT_MS = 10 * 60_000;

/** Bytes queued for a slow consumer before the socket stops reading (a page's body is consumed as it comes). */
const BODY_HIGH_WATER = 1024 * 1024;

export interface ConnectTarget {
  host: string;
  port: number;
  /** TLS options (ca, servername…) when the member URL is https. */
  tls?: ConnectionOptions;
}

/**
 * One keep-alive HTTP/1.1 connection carrying one exchange at a time. Plain sockets read with
 * `onread` into pooled slabs (see slabs.ts): the kernel writes into memory that is handed on
 * as-is and reused once released, where Node's default reads allocate a fresh 64 KiB buffer
 * per read (and shrink it, a copy, when partly filled). TLS sockets read the default way.
 */
export class Connection {
  private parser: ResponseParser | undefined;
  private exchange: Exchange | undefined;
  private slabs: SlabReader | undefined;
  /** Exchanges completed on this connection (a reused connection may have been closed by its peer meanwhile). */
  uses = 0;
  idleSince = 0;
  /** Closes the connection once it has been idle too long to be reused (it holds a socket and a slab). */
  idleTimer: NodeJS.Timeout | undefined;
  closed = false;

  /** Set right after construction: a plain socket asks the connection for its first read buffer as it is created. */
  socket!: Socket;

  private constructor() {}

  static open(target: ConnectTarget, connectMs: number, slabs: SlabPool, onClosed: (c: Connection) => void): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const conn = new Connection();
      const reader = target.tls ? undefined : (conn.slabs = slabs.reader());
      let socket: Socket;
      if (target.tls) {
        socket = tlsConnect({ ...target.tls, host: target.host, port: target.port, ALPNProtocols: ['http/1.1'] });
        socket.on('data', (chunk: Buffer) => conn.onData(chunk));
      } else {
        socket = netConnect({
          host: target.host,
          port: target.port,
          noDelay: true,
          onread: { buffer: () => reader!.next(), callback: (n: number, buf: Uint8Array) => conn.onRead(n, buf as Buffer) },
        });
      }
      conn.socket = socket;
      ownSockets.add(socket);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new TransportError('FANOUT_CONNECT_TIMEOUT', `no connection within ${connectMs} ms`));
      }, connectMs);
      const failed = (err: Error) => {
        clearTimeout(timer);
        conn.slabs?.close();
        reject(err);
      };
      socket.once('error', failed);
      socket.once(target.tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        socket.off('error', failed);
        socket.setNoDelay(true);
        socket.on('error', (err) => conn.fail(err));
        socket.on('end', () => conn.onEnd());
        socket.on('close', () => {
          conn.closed = true;
          conn.slabs?.close();
          conn.fail(new TransportError('FANOUT_SOCKET_CLOSED', 'connection closed'));
          onClosed(conn);
        });
        resolve(conn);
      });
    });
  }

  /** Sends a request (a GET, or a POST with its small `body`) and resolves with the response once its head has arrived. */
  request(
    head: string,
    timeouts: ExchangeTimeouts,
    signal: AbortSignal | undefined,
    onDone: (reusable: boolean) => void,
    onInformational?: (statusCode: number) => void,
    body?: Buffer,
  ): Promise<LeanResponse> {
    return new Promise((resolve, reject) => {
      const exchange = new Exchange(this, timeouts, signal, resolve, reject, onDone, onInformational);
      this.exchange = exchange;
      this.parser = new ResponseParser(exchange);
      exchange.start();
      if (!body) return void this.socket.write(head);
      // One segment for head and body where they fit (noDelay would send two).
      this.socket.cork();
      this.socket.write(head);
      this.socket.write(body);
      this.socket.uncork();
    });
  }

  /** Whether the current exchange had seen any response byte when it failed. */
  get responseStarted(): boolean {
    return this.parser?.started ?? false;
  }

  get reusable(): boolean {
    return !this.closed && !this.socket.destroyed && (this.parser?.reusable ?? false);
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }

  /** Called by the exchange once it is over, before the pool is told. */
  detach(): void {
    this.exchange = undefined;
  }

  /** Marks a body chunk as lent from this connection's slab (given back through the pool's release). */
  lend(chunk: Buffer): void {
    this.slabs?.lend(chunk);
  }

  private onRead(n: number, buf: Buffer): boolean {
    this.slabs!.advance(n);
    this.onData(buf.subarray(0, n));
    return !this.socket.isPaused();
  }

  private onData(chunk: Buffer): void {
    const exchange = this.exchange;
    if (!exchange || !this.parser) {
      // Bytes nobody asked for on an idle connection: it cannot be trusted for the next request.
      this.destroy();
      return;
    }
    try {
      this.parser.execute(chunk);
    } catch (err) {
      exchange.fail(err as Error);
      return;
    }
    // Released only after the whole read was parsed: bytes past the response's end forbid reuse.
    if (exchange.completed) exchange.release();
    else exchange.arrived(chunk.length);
  }

  private onEnd(): void {
    const exchange = this.exchange;
    try {
      this.parser?.end();
      if (exchange?.completed) exchange.release();
    } catch (err) {
      exchange?.fail(err as Error);
    }
    this.destroy();
  }

  fail(err: Error): void {
    this.exchange?.fail(err);
  }
}

/** One request and its response on a connection: deadlines, abort, backpressure, the body queue. */
class Exchange {
  private head: ResponseHead | undefined;
  private body: BodyQueue | undefined;
  private response: LeanResponse | undefined;
  private timer: NodeJS.Timeout | undefined;
  private over = false;
  /** When the request went out, and the 1xx heads seen since (see onInformational). */
  private startedAt = 0;
  private interimHeads = 0;
  private lastInterimAt = 0;
  /** When the first-byte timer fires (moved on by 1xx heads, up to maxInterimMs after startedAt). */
  private deadline = 0;
  /** The body's progress floor (window.ts), once the head has arrived. */
  private window: ProgressWindow | undefined;
  /** The parser saw the response's end; the connection is released once the read is parsed. */
  completed = false;
  private readonly onAbort = () => this.fail(abortReason(this.signal));

  constructor(
    private readonly conn: Connection,
    private readonly timeouts: ExchangeTimeouts,
    private readonly signal: AbortSignal | undefined,
    private readonly resolve: (r: LeanResponse) => void,
    private readonly reject: (e: Error) => void,
    private readonly onDone: (reusable: boolean) => void,
    private readonly informational?: (statusCode: number) => void,
  ) {}

  /**
   * A 1xx head: the server is alive and working on it (102: filling the page), so the first-byte
   * deadline starts again — but never past maxInterimMs after the request: a peer that sends 1xx
   * heads and never an answer (stuck, or hostile) does not hold the read for ever.
   */
  onInformational(statusCode: number): void {
    this.interimHeads++;
    if (!this.head) this.extend();
    this.informational?.(statusCode);
  }

  start(): void {
    if (this.signal?.aborted) return this.fail(abortReason(this.signal));
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    const { firstByteMs } = this.timeouts;
    // Monotonic: a deadline read by Date.now() would wait out an hour the wall clock steps back.
    this.startedAt = performance.now();
    this.deadline = this.startedAt + firstByteMs;
    this.timer = setTimeout(() => this.noHead(), firstByteMs);
  }

  /** Moves the first-byte deadline to firstByteMs from now, within the interim cap. */
  private extend(): void {
    const { firstByteMs } = this.timeouts;
    const now = (this.lastInterimAt = performance.now());
    const cap = this.startedAt + Math.max(firstByteMs, this.timeouts.maxInterimMs ?? MAX_INTERIM_WAIT_MS);
    const deadline = Math.min(now + firstByteMs, cap);
    if (deadline <= this.deadline) return;
    this.deadline = deadline;
    if (deadline === now + firstByteMs) return void this.timer?.refresh();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.noHead(), deadline - now);
  }

  private noHead(): void {
    const { firstByteMs } = this.timeouts;
    const now = performance.now();
    // libuv's timers run on the loop's clock, read once per turn: one refreshed in a late turn can
    // fire a little before the deadline by performance.now(). Before, that read as cut by the interim cap.
    if (now < this.deadline) {
      this.timer = setTimeout(() => this.noHead(), this.deadline - now);
      return;
    }
    // Cut by the interim cap: the last 1xx head came less than firstByteMs before the deadline.
    if (this.interimHeads > 0 && this.deadline - this.lastInterimAt < firstByteMs) {
      const why = `only interim answers (${this.interimHeads}, e.g. 102 Processing) for ${Math.round(now - this.startedAt)} ms, no final response (at most ${Math.max(firstByteMs, this.timeouts.maxInterimMs ?? MAX_INTERIM_WAIT_MS)} ms)`;
      return this.fail(new TransportError('FANOUT_INTERIM_TIMEOUT', why));
    }
    const why = this.interimHeads > 0 ? `no final response within ${Math.round(now - this.startedAt)} ms (${this.interimHeads} interim answers only, the last ${Math.round(now - this.lastInterimAt)} ms ago)` : `no response within ${firstByteMs} ms`;
    this.fail(new TransportError('FANOUT_FIRST_BYTE_TIMEOUT', why));
  }

  /** Socket bytes arrived: they count towards the idle window's floor. */
  arrived(bytes: number): void {
    this.window?.arrived(bytes);
  }

  onHead(head: ResponseHead): void {
    this.head = head;
    clearTimeout(this.timer);
    const window = (this.window = new ProgressWindow(this.timeouts.idleMs, (why) => this.fail(new TransportError('FANOUT_IDLE_TIMEOUT', why))));
    window.start();
    const socket = this.conn.socket;
    // Once the exchange is over the connection may carry the next one: this body's reader,
    // still draining its queue, must not resume a socket the next response paused.
    this.body = new BodyQueue(BODY_HIGH_WATER, {
      pause: () => {
        if (this.over) return;
        window.pause();
        socket.pause();
      },
      resume: () => {
        if (this.over) return;
        window.resume();
        socket.resume();
      },
      abandon: () => this.fail(new TransportError('FANOUT_ABANDONED', 'response abandoned by its reader')),
    });
    this.response = {
      statusCode: head.statusCode,
      headers: head.headers,
      body: this.body,
      trailers: {},
      destroy: () => this.fail(new TransportError('FANOUT_ABANDONED', 'response abandoned by its reader')),
    };
    this.resolve(this.response);
  }

  onBody(chunk: Buffer): void {
    this.conn.lend(chunk);
    this.body!.push(chunk);
  }

  onComplete(trailers: Record<string, string>): void {
    this.response!.trailers = trailers;
    this.completed = true;
    this.body!.end();
  }

  release(): void {
    this.finish();
  }

  fail(err: Error): void {
    if (this.over) return;
    this.conn.destroy();
    this.finish();
    if (this.body) this.body.fail(err);
    else this.reject(err);
  }

  private finish(): void {
    if (this.over) return;
    this.over = true;
    clearTimeout(this.timer);
    this.window?.stop();
    this.signal?.removeEventListener('abort', this.onAbort);
    this.conn.detach();
    if (this.conn.socket.isPaused()) this.conn.socket.resume();
    this.onDone(this.conn.reusable);
  }
}

/** The error an aborted request ends with: the signal's own reason when it is an Error. */
export function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  if (reason instanceof Error) return reason;
  const error = new Error('page request aborted');
  error.name = 'AbortError';
  return error;
}
