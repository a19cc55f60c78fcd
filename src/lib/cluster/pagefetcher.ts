import { Pool, type Dispatcher } from 'undici';
import { crc32 } from 'node:zlib';
import { FanoutError, errorFromJSON } from '../../core/errors.js';
import { encodeUrlPath } from '../../core/paths.js';
import type { Member, PageRef } from '../../core/types.js';

/** Header (cached page) or trailer (page streamed while it arrives from the source). */
export const CHECKSUM_HEADER = 'x-fanout-crc32';

/**
 * Fetches whole pages from workers over HTTP and verifies their checksums before handing them
 * on. One undici connection pool per worker, so parallel page reads reuse connections.
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
}

export class PageFetcher {
  private readonly pools = new Map<string, Pool>();

  constructor(protected readonly options: PageFetcherOptions = {}) {}

  /**
   * Returns the page as the chunks it arrived in: copying them into one page buffer cost more
   * than the network read (fresh 4 MiB buffers fault in page by page).
   */
  async fetch(member: Member, ref: PageRef, expectedLength: number, options: PageRequestOptions = {}): Promise<Buffer[]> {
    const page: Buffer[] = [];
    for await (const chunk of await this.stream(member, ref, expectedLength, options)) page.push(chunk);
    return page;
  }

  /**
   * Opens a page request and returns its bytes as they arrive. Errors the worker answers with
   * are thrown before any byte; the length and checksum are verified after the last byte, so
   * the consumer must treat what it got as provisional until the iteration ends cleanly.
   */
  async stream(member: Member, ref: PageRef, expectedLength: number, options: PageRequestOptions = {}): Promise<AsyncGenerator<Buffer>> {
    const query = `v=${encodeURIComponent(ref.version)}&size=${ref.size}&i=${ref.index}` + (ref.hash ? `&h=${ref.hash}` : '');
    const path = `/v1/page/${encodeUrlPath(ref.mount)}/${encodeUrlPath(ref.path)}?${query}`;
    const headers = { ...this.options.headers?.(), ...(options.direct && this.options.direct ? { [DIRECT_HEADER]: '1' } : {}) };
    let response;
    try {
      response = await this.pool(member).request({ method: 'GET', path, signal: options.signal, headers });
    } catch (err) {
      throw unavailable(member, err);
    }
    const { statusCode, body } = response;
    if (statusCode !== 200) {
      const text = await body.text().catch(() => '');
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      throw errorFromJSON(parsed, statusCode);
    }
    return verifiedBody(member, ref, expectedLength, response);
  }

  /** Drops pools of workers that left the cluster. */
  retain(members: Member[]): void {
    const keep = new Set(members.map((m) => m.url));
    for (const [url, pool] of this.pools) {
      if (!keep.has(url)) {
        this.pools.delete(url);
        void pool.close().catch(() => {});
      }
    }
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})));
  }

  private pool(member: Member): Pool {
    let pool = this.pools.get(member.url);
    if (!pool) {
      pool = new Pool(member.url, { connections: this.options.connectionsPerWorker ?? 8, pipelining: 1, connect: this.options.connect });
      this.pools.set(member.url, pool);
    }
    return pool;
  }
}

export interface PageRequestOptions {
  signal?: AbortSignal;
  /** Ask the worker to read the source itself rather than forward to the page's owner (hedges, failover). */
  direct?: boolean;
}

/** Set on requests that must not be forwarded again (loop guard) or that want a direct source read. */
export const DIRECT_HEADER = 'x-fanout-direct';

async function* verifiedBody(
  member: Member,
  ref: PageRef,
  expectedLength: number,
  response: Dispatcher.ResponseData,
): AsyncGenerator<Buffer> {
  const { headers, body, trailers } = response;
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
    if (err instanceof FanoutError) throw err;
    throw unavailable(member, err);
  } finally {
    if (!body.destroyed && received !== expectedLength) body.destroy();
  }
  if (received !== expectedLength) {
    throw new FanoutError('WORKER_UNAVAILABLE', `worker ${member.id} sent ${received} of ${expectedLength} page bytes`);
  }
  const expected = headers[CHECKSUM_HEADER] ?? trailers[CHECKSUM_HEADER];
  if (typeof expected !== 'string' || parseInt(expected, 16) !== crc) {
    throw new FanoutError('CHECKSUM_MISMATCH', `page ${ref.index} of /${ref.mount}/${ref.path} from ${member.id} failed its checksum`);
  }
}

function unavailable(member: Member, err: unknown): FanoutError {
  if ((err as Error)?.name === 'AbortError' || (err as { code?: string })?.code === 'UND_ERR_ABORTED') {
    return new FanoutError('ABORTED', 'page read aborted', { cause: err });
  }
  return new FanoutError('WORKER_UNAVAILABLE', `worker ${member.id} (${member.url}) failed: ${(err as Error)?.message}`, { cause: err });
}
