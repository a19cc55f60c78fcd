import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { pageKey, pageSpan } from '../core/pages.js';
import type { PageRef } from '../core/types.js';
import { CHECKSUM_HEADER } from '../lib/cluster/index.js';
import type { PageStore } from '../lib/pagestore/index.js';
import type { TokenBucket } from '../lib/ratelimit/index.js';
import type { PageFill } from '../lib/transfer/index.js';
import { SingleFlight } from '../lib/transfer/index.js';
import type { Ufs } from '../lib/ufs/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import { sendChunks } from './http.js';

export interface PageServiceDeps {
  store: PageStore;
  ufs: (mount: string) => Ufs;
  sourceLimiter: TokenBucket;
  metrics: WorkerMetrics;
  pageSize: number;
  logger: Logger;
  /** Aborted when the worker stops, ending every source read. */
  signal: AbortSignal;
}

/**
 * Answers page requests: from the store when the page is there (checksum verified first),
 * otherwise from a single-flight source read that streams to every waiter as bytes arrive and
 * lands in the store only once complete and whole.
 */
export class PageService {
  readonly flights = new SingleFlight();

  constructor(private readonly deps: PageServiceDeps) {}

  async serve(res: ServerResponse, ref: PageRef): Promise<void> {
    const { pageSize, store, metrics } = this.deps;
    const { start, end } = pageSpan(ref.index, ref.size, pageSize);
    const key = pageKey(ref, pageSize);
    if (!this.flights.get(key)) {
      const page = await store.get(key);
      if (page) {
        metrics.hits.inc();
        metrics.bytesServed.inc(page.data.length);
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': page.data.length,
          [CHECKSUM_HEADER]: hex(page.crc),
          'x-fanout-cache': 'hit',
        });
        res.end(page.data, () => page.release());
        return;
      }
    }
    metrics.misses.inc();
    const fill = this.joinFill(key, ref, start, end - start);
    await this.streamFill(res, fill);
  }

  private joinFill(key: string, ref: PageRef, start: number, length: number): PageFill {
    const { store, metrics, logger } = this.deps;
    const { fill, started } = this.flights.join(
      key,
      length,
      () => this.sourceChunks(ref, start, length),
      async (done) => {
        try {
          await store.put(key, done.buffer, done.crc);
        } catch (err) {
          logger.warn({ err, key }, 'page read from source could not be stored; served uncached');
        }
      },
    );
    if (started) {
      metrics.sourceReads.inc();
      fill.settled.then(() => {
        if (fill.error && fill.error.code !== 'NOT_FOUND' && fill.error.code !== 'SOURCE_CHANGED') {
          logger.warn({ code: fill.error.code, err: fill.error.message, mount: ref.mount, path: ref.path, page: ref.index }, 'source read failed');
        }
      });
    }
    return fill;
  }

  private async *sourceChunks(ref: PageRef, start: number, length: number): AsyncGenerator<Buffer> {
    const { sourceLimiter, metrics, signal } = this.deps;
    const counter = metrics.bytesFromSource.labels(ref.mount);
    const stream = this.deps.ufs(ref.mount).read(ref.path, ref.version, start, length, signal);
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      await sourceLimiter.take(chunk.length, signal);
      counter.inc(chunk.length);
      yield chunk;
    }
  }

  /** Streams a fill to one reader; the checksum follows the body as a trailer. */
  private async streamFill(res: ServerResponse, fill: PageFill): Promise<void> {
    const { metrics } = this.deps;
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const chunk of fill.chunks(gone.signal)) {
        metrics.bytesServed.inc(chunk.length);
        yield chunk;
      }
    }
    await sendChunks(
      res,
      counted(),
      () => res.writeHead(200, { 'content-type': 'application/octet-stream', trailer: CHECKSUM_HEADER, 'x-fanout-cache': 'miss' }),
      () => res.addTrailers({ [CHECKSUM_HEADER]: hex(fill.crc) }),
    );
  }
}

function hex(crc: number): string {
  return crc.toString(16).padStart(8, '0');
}
