import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { FanoutError } from '../core/errors.js';
import { pageKey } from '../lib/pagekey/index.js';
import type { PageRef } from '../core/types.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { PageFile, PageStore } from '../lib/pagestore/index.js';
import { MAX_SEND_SPANS, sendFilesTo } from '../lib/sendfile/index.js';
import type { Semaphore } from '../lib/transfer/index.js';
import { kernelSendable, takeHead } from './kernelsend.js';

/**
 * The spans of a range response that are pages stored on this worker, sent by the kernel
 * (sendfile from the page file) between the spans the response writes itself. Used by
 * /v1/data and S3 GetObject on plain connections with the addon; never with TLS or HEAD.
 */
export interface LocalSpans {
  /** Whether the page is in this worker's store now (its span can leave by the kernel). */
  has(ref: PageRef): boolean;
  /**
   * Sends bytes [from, to) of each page in turn (offsets within the page) after whatever the
   * response has queued, as one kernel send: pages in a row cost no round trip through the JS
   * thread between them. Returns how many of the spans were sent: the run stops before a page
   * that left the store before it was opened (0: nothing sent). A send that fails part-way
   * destroys the connection (the client sees a short body) and throws. `beforeSend` runs once the
   * pages are open, before a byte leaves: the response's head is written there, so that a failure
   * to open them (no file descriptor left: OVERLOADED) is still answered with its code.
   */
  sendRun(spans: PageSpan[], beforeSend: () => void): Promise<number>;
}

/** Bytes [from, to) of a page, offsets within the page. */
export interface PageSpan {
  ref: PageRef;
  from: number;
  to: number;
}

/**
 * The most pages one kernel send carries: runs longer than this are sent as several. 16 pages of
 * 4 MiB is 64 MiB between two turns of the JS thread; the descriptors are the kept ones.
 */
export const MAX_RUN_PAGES = Math.min(16, MAX_SEND_SPANS);

export interface LocalSpanDeps {
  store: PageStore;
  /** The worker's response slots: held only while a page may be read to be checked (openForSend). */
  slots: Semaphore;
  metrics: WorkerMetrics;
  pageSize: number;
  /** A client that takes no byte for this long is cut. */
  clientIdle: number;
}

/**
 * Kernel sends for one response, or undefined when it must take the JS path (TLS, HEAD, no
 * addon, FANOUT_NO_SENDFILE=1, or its head already written). Ask before writing the head.
 * A span being sent holds a file descriptor and no page memory, so a client that stops
 * reading pins no buffer and no slot; clientIdle cuts it.
 */
export function localSpansFor(res: ServerResponse, deps: LocalSpanDeps, signal: AbortSignal): LocalSpans | undefined {
  if (!kernelSendable(res)) return undefined;
  const { store, slots, metrics, pageSize, clientIdle } = deps;
  return {
    has: (ref) => store.has(pageKey(ref, pageSize)),
    async sendRun(spans, beforeSend) {
      const pages: PageFile[] = [];
      try {
        const release = await slots.acquire(signal);
        try {
          for (const { ref, to } of spans) {
            const page = await store.openForSend(pageKey(ref, pageSize));
            if (!page) break;
            if (to > page.size) {
              await page.close(); // not the page the range expects: let the reader decide
              break;
            }
            pages.push(page);
          }
        } finally {
          release();
        }
        if (pages.length === 0) return 0;
        beforeSend();
        const socket = res.socket as Socket | null;
        if (!socket || socket.destroyed) throw new FanoutError('ABORTED', 'client went away');
        const sending = pages.map((page, i) => ({ fd: page.fd, offset: spans[i]!.from, length: spans[i]!.to - spans[i]!.from }));
        metrics.hits.inc(pages.length);
        metrics.bytesServed.inc(sending.reduce((sum, s) => sum + s.length, 0));
        // The response's head, if it has not left yet, goes with the first span's first bytes.
        const head = takeHead(res);
        try {
          await sendFilesTo(socket, sending, { idleMs: clientIdle, head });
        } catch (err) {
          socket.destroy();
          throw err;
        }
        return pages.length;
      } finally {
        await Promise.all(pages.map((page) => page.close()));
      }
    },
  };
}
