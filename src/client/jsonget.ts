import { bodyText, ConnectionPool, SlabPool, TransportError } from '../lib/leanhttp/index.js';
import type { PeerTimeouts } from '../lib/cluster/timeouts.js';
import type { ClientTrust } from '../lib/tls/client.js';

/**
 * Connections kept per worker for JSON answers. A FUSE mount looks files up many at once; more
 * lookups than this wait for a connection rather than opening one each.
 */
const CONNECTIONS_PER_WORKER = 16;

/**
 * The largest JSON answer read (the listing of a directory of ≈ a million files): a worker that
 * sends an endless body fails the request instead of growing the client until it dies.
 */
export const MAX_JSON_ANSWER = 256 * 1024 * 1024;

/**
 * GETs of the SDK's small JSON answers (/v1/cluster, /v1/stat, /v1/list, /v1/status) on the lean
 * HTTP/1.1 client the pages use (lib/leanhttp): keep-alive connections per worker, the page
 * requests' deadlines (connect, first byte, silence between body chunks; a timeout fails with
 * the transport's code, which describeTimeout words), a request lost on a reused connection
 * sent once more. Node's own HTTP client did this before: loading it and opening its first
 * connection cost a 1-byte `fanout cat` ≈ 5 ms, and undici before that most of its start-up.
 */
export class JsonGetter {
  /**
   * Pools of their own, not the page transport's: a lookup (a FUSE mount's stat, a cat's
   * /v1/stat) never waits behind a window of page requests holding every page connection.
   */
  private readonly pools = new Map<string, ConnectionPool>();
  /** Read memory of every pool's connections (each holds a slab while open). */
  private readonly slabs = new SlabPool();
  private closed = false;

  constructor(
    private readonly timeouts: PeerTimeouts,
    /** TLS options of every https:// request (the CA bundle). */
    private readonly tls: ClientTrust | undefined,
  ) {}

  /** The status and body text of GET `url`; rejects on a network failure, a missed deadline or `signal`. */
  async get(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<{ statusCode: number; text: string }> {
    const target = new URL(url);
    const pool = this.pool(target.origin);
    const response = await pool.get(target.pathname + target.search, headers, signal);
    const text = await bodyText(response, this.slabs, MAX_JSON_ANSWER).catch((err: unknown) => {
      throw err instanceof RangeError ? new TransportError('FANOUT_TOO_LARGE', `${target.pathname}: ${err.message}`) : err;
    });
    return { statusCode: response.statusCode, text };
  }

  /** Pools open (a session's counter: none once it is closed). */
  poolCount(): number {
    return this.pools.size;
  }

  close(): void {
    this.closed = true;
    for (const pool of this.pools.values()) pool.destroy();
    this.pools.clear();
  }

  private pool(origin: string): ConnectionPool {
    let pool = this.pools.get(origin);
    if (!pool) {
      // A request after close() (a stat moving on to the next endpoint once its pool was
      // destroyed) opened a pool again that nobody closed: its connections kept the process alive.
      if (this.closed) throw new TransportError('FANOUT_SOCKET_CLOSED', 'the JSON client is closed');
      pool = new ConnectionPool(origin, { connections: CONNECTIONS_PER_WORKER, timeouts: this.timeouts, tls: this.tls, slabs: this.slabs });
      this.pools.set(origin, pool);
    }
    return pool;
  }
}
