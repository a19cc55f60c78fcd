import type { ServerResponse } from 'node:http';
import { FanoutError } from '../core/errors.js';
import { CHECKSUM_HEADER, ERROR_TRAILER, errorTrailers } from '../lib/cluster/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { PageStore, VerifiedPage } from '../lib/pagestore/index.js';
import { PageFill, type Semaphore } from '../lib/transfer/index.js';
import type { ResponseFlow } from './flow.js';
import { kernelCanFinishChunked, kernelSendable, sendPageFile, sendPageFileChunk, wholePageHead } from './kernelsend.js';
import type { FillFile } from './fillfile.js';
import { followFillByKernel } from './fillfollow.js';

/**
 * The sending half of the page service: a stored page (by the kernel or from a verified buffer)
 * and a fill streamed as it arrives, each bounded by the worker's response slots.
 */
export interface PageSendDeps {
  store: PageStore;
  metrics: WorkerMetrics;
  /** Page buffers held at once by responses (PageService.responseSlots). */
  responseSlots: Semaphore;
  /** A response whose client takes no byte for this long is destroyed. */
  clientIdle: number;
}

/**
 * How long a response whose client is not keeping up may keep a page buffer while it waits.
 * Past it the page goes back (and is read again when the client has taken its queued bytes):
 * a client reading a page in under a second never pays that, a slow one holds only its queue.
 */
export const PAGE_HOLD_MS = 1000;

/**
 * Past this many bytes of finished fills' buffers kept alive only by slow sockets (views queued
 * on them), new writes to waiters are copies again: 50 clients that stop reading keep at most
 * this much (plus one buffer per client being written when it crossed the bound).
 */
export const ORPHANED_FILL_BYTES = 32 * 1024 * 1024;

/**
 * Sends a stored page from byte `from` on. The verified page is held (with a response slot)
 * only while the client takes bytes or nobody else waits for a slot: a slow client gives its
 * page back and reads it again from the store when its socket has room, so slow clients
 * cannot hold every slot. Returns false if the page is not in the store when first asked.
 */
export async function sendStored(
  deps: PageSendDeps,
  res: ServerResponse,
  key: string,
  flow: ResponseFlow,
  signal: AbortSignal,
  from: number,
  onFirst?: (page: VerifiedPage) => void,
  onEnd: () => void = () => {},
): Promise<boolean> {
  let offset = from;
  let first = true;
  while (true) {
    const releaseSlot = await deps.responseSlots.acquire(signal);
    let page: VerifiedPage | undefined;
    try {
      page = await deps.store.get(key);
      if (!page) {
        if (first && onFirst) return false;
        throw new FanoutError('INTERNAL', 'page left the store while it was being sent');
      }
      if (first) onFirst?.(page);
      first = false;
      const since = flow.now();
      while (offset < page.data.length) {
        offset = flow.write(page.data, offset, page.data.length);
        if (offset === page.data.length) break;
        // Others need the slot, or this client is slow: give the page back while it catches up.
        if (deps.responseSlots.waiting > 0 || flow.now() - since >= PAGE_HOLD_MS) break;
        await flow.room();
      }
      if (offset >= page.data.length) {
        onEnd();
        res.end();
        return true;
      }
    } finally {
      page?.release();
      releaseSlot();
    }
    await flow.room();
  }
}

/**
 * A page a fill brings in, answered whole once verified: for an HTTP/1.0 reader, whose body
 * cannot be chunked and so cannot carry the checksum as a trailer. It gets what a hit gets
 * (content-length and checksum in the head), later.
 */
export async function sendWholeFill(res: ServerResponse, page: VerifiedPage, flow: ResponseFlow): Promise<void> {
  try {
    res.writeHead(200, wholePageHead(page.data.length, page.crc, 'miss'));
    let offset = 0;
    while (offset < page.data.length) {
      offset = flow.write(page.data, offset, page.data.length);
      if (offset < page.data.length) await flow.room();
    }
    res.end();
  } finally {
    page.release();
  }
}

/**
 * A hit sent from the page file by the kernel (see kernelsend.ts). A response slot is held only
 * while the page may be read into a buffer (checked after a restart or a write to its file): the send
 * itself holds no page memory, so a client that stops reading holds no slot (it would otherwise
 * keep hits waiting for clientIdle); it holds its connection until clientIdle cuts it. The
 * page's bytes are not otherwise read here on a hit (readers check the checksum end to end).
 * Returns false if the page left the store before it was opened. `gone` aborts when the client leaves.
 */
export async function sendStoredByKernel(deps: PageSendDeps, res: ServerResponse, key: string, gone: AbortController): Promise<boolean> {
  const { store, metrics } = deps;
  // The signal is made only for a wait: most hits find a slot free (an AbortSignal costs a hit
  // ≈ 10 µs of the worker's JS thread).
  const releaseSlot = deps.responseSlots.tryAcquire() ?? (await deps.responseSlots.acquire(gone.signal));
  let page;
  try {
    page = await store.openForSend(key);
  } finally {
    releaseSlot();
  }
  if (!page) return false;
  try {
    metrics.hits.inc();
    metrics.bytesServed.inc(page.size);
    await sendPageFile(res, page, deps.clientIdle);
    return true;
  } finally {
    await page.close();
  }
}

/**
 * Streams a fill to one reader as it arrives; the checksum follows the body as a trailer. Every
 * waiter is written the fill's own buffer (views, no copy per waiter). A reader more than
 * PAGE_HOLD_MS behind a finished fill continues from the store, so it does not keep the fill's
 * buffer. A reader that leaves may cancel the fill (PageFill.leave). A
 * fill that fails after the headers left ends the body early with the failure's code as a
 * trailer for a reader that reads trailers, and cuts the connection for any other (failAfterHead).
 */
export async function streamFill(
  deps: PageSendDeps,
  res: ServerResponse,
  key: string,
  fill: PageFill,
  flow: ResponseFlow,
  signal: AbortSignal,
  file?: FillFile,
): Promise<void> {
  // A plain socket follows the fill's file by the kernel (fillfollow.ts); TLS, HEAD and a file
  // that could not be written take the JS path below.
  const follower = file && kernelSendable(res) && chunkedByDefault(res) ? file.follow() : undefined;
  deps.metrics.fillSends.labels(follower ? 'kernel' : 'js').inc();
  if (follower) return followFillByKernel(deps, res, fill, follower, flow, signal);
  const { metrics, store } = deps;
  fill.enter();
  let inside = true;
  const leave = () => {
    if (inside) fill.leave();
    inside = false;
  };
  fill.hold();
  let holding = true;
  const letGo = () => {
    if (holding) fill.release();
    holding = false;
  };
  let offset = 0;
  let headed = false;
  // A HEAD answer has no body, so no chunked encoding to carry a trailer (node throws on one).
  const bodiless = res.req?.method === 'HEAD';
  const head = () => {
    if (headed) return;
    res.writeHead(200, { 'content-type': 'application/octet-stream', ...(bodiless ? {} : { trailer: `${CHECKSUM_HEADER}, ${ERROR_TRAILER}` }), 'x-fanout-cache': 'miss' });
    headed = true; // only once the head is Node's to send: a throw above is answered as an error
  };
  const trailer = () => bodiless || res.addTrailers({ [CHECKSUM_HEADER]: hex(fill.crc) });
  // Views of the fill's buffer go to the socket as they are (one buffer for every waiter, no
  // copy per waiter), unless slow clients already keep too many finished fills' buffers alive.
  const pin = () => fill.pin();
  let doneSeenAt: number | undefined;
  try {
    for await (const view of fill.chunks(signal)) {
      head();
      const viewEnd = offset + view.length;
      let at = 0;
      while (at < view.length) {
        at = PageFill.orphanedBytes < ORPHANED_FILL_BYTES ? flow.writeShared(view, at, view.length, pin) : flow.write(view, at, view.length);
        if (at === view.length) break;
        if (fill.done) doneSeenAt ??= flow.now();
        if (doneSeenAt !== undefined && flow.now() - doneSeenAt >= PAGE_HOLD_MS && store.has(key)) {
          // A client slower than the fill by more than PAGE_HOLD_MS: finish from the store
          // (which lends its page only while the client takes bytes) and let the fill's buffer go.
          metrics.bytesServed.inc(offset + at);
          letGo();
          leave();
          if (kernelCanFinishChunked(res) && (await finishByKernel(deps, res, key, offset + at, signal))) {
            trailer();
            res.end();
            return;
          }
          await sendStored(deps, res, key, flow, signal, offset + at, undefined, trailer);
          return;
        }
        await flow.room();
      }
      offset = viewEnd;
    }
    head();
    metrics.bytesServed.inc(offset);
    trailer();
    res.end();
  } catch (err) {
    if (!headed || signal.aborted || bodiless) throw err;
    failAfterHead(res, err);
  } finally {
    leave();
    letGo();
  }
}

/**
 * Ends a page answer whose fill failed after its 200 head left. A client that reads trailers
 * (`TE: trailers`, RFC 9110 10.1.4, as fanout's page fetcher sends) gets the body ended early
 * with the failure's code as a trailer, so it can tell a broken source from a dead worker. Any
 * other client (curl, fetch, a proxy) never looks at trailers: a body ended normally would be
 * taken as the page, as a relay's bytes from an owner that failed their checksum were (found by
 * a fault hunt: curl exited 0 with the owner's corrupt page). Its connection is cut instead,
 * before the chunked body's last chunk, which every HTTP client reports as an incomplete answer.
 */
export function failAfterHead(res: ServerResponse, err: unknown): void {
  if (!readsTrailers(res)) {
    res.destroy();
    return;
  }
  const failure = err instanceof FanoutError ? err : new FanoutError('INTERNAL', String(err));
  res.addTrailers(errorTrailers(failure.code, failure.message));
  res.end();
}

/** Whether the request said its client reads trailers (`TE: trailers`). */
export function readsTrailers(res: ServerResponse): boolean {
  const te = res.req?.headers.te;
  return typeof te === 'string' && te.split(',').some((part) => part.split(';')[0]!.trim().toLowerCase() === 'trailers');
}

/**
 * The rest of a fill's page, from `from`, sent from the stored page file by the kernel as one
 * chunk (no page buffer held while a slow client takes it). False if the page left the store.
 */
async function finishByKernel(deps: PageSendDeps, res: ServerResponse, key: string, from: number, signal: AbortSignal): Promise<boolean> {
  const releaseSlot = await deps.responseSlots.acquire(signal);
  let page;
  try {
    page = await deps.store.openForSend(key);
  } finally {
    releaseSlot();
  }
  if (!page) return false;
  try {
    deps.metrics.bytesServed.inc(page.size - from);
    await sendPageFileChunk(res, page, from, deps.clientIdle);
    return true;
  } finally {
    await page.close();
  }
}

export function hex(crc: number): string {
  return crc.toString(16).padStart(8, '0');
}

/** Whether the response will be chunked (an HTTP/1.1 request): HTTP/1.0 bodies end by closing. */
export function chunkedByDefault(res: ServerResponse): boolean {
  const req = res.req;
  return !!req && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1;
}
