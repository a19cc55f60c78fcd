import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { FanoutError } from '../core/errors.js';
import { pageKey } from '../lib/pagekey/index.js';
import type { PageRef } from '../core/types.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { PageStore } from '../lib/pagestore/index.js';
import { sendFileTo } from '../lib/sendfile/index.js';
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
   * Sends bytes [from, to) of the page (offsets within the page) after whatever the response
   * has queued. False, with nothing sent, if the page left the store before it was opened.
   * A send that fails part-way destroys the connection (the client sees a short body) and throws.
   */
  send(ref: PageRef, from: number, to: number): Promise<boolean>;
}

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
    async send(ref, from, to) {
      const release = await slots.acquire(signal);
      let page;
      try {
        page = await store.openForSend(pageKey(ref, pageSize));
      } finally {
        release();
      }
      if (!page) return false;
      try {
        if (to > page.size) return false; // not the page the range expects: let the reader decide
        metrics.hits.inc();
        metrics.bytesServed.inc(to - from);
        const socket = res.socket as Socket | null;
        if (!socket || socket.destroyed) throw new FanoutError('ABORTED', 'client went away');
        // The response's head, if it has not left yet, goes with this span's first bytes.
        const head = takeHead(res);
        try {
          await sendFileTo(socket, page.fd, from, to - from, { idleMs: clientIdle, head });
        } catch (err) {
          socket.destroy();
          throw err;
        }
        return true;
      } finally {
        await page.close();
      }
    },
  };
}
