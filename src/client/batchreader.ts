import type { Dispatcher } from 'undici';
import { FanoutError, type ErrorCode } from '../core/errors.js';
import { pageSpan } from '../core/pages.js';
import { pageKey } from '../lib/pagekey/index.js';
import type { Member, PageRef } from '../core/types.js';
import { undici } from '../lib/http/undici.js';
// Not lib/wire/index.js: that loads zod, which `fanout stat`/`cat` must not (cli-read test).
import { BATCH_LIMITS, FrameReader, type BatchFrame } from '../lib/wire/batch.js';
import { HEADERS, ROUTES } from '../lib/wire/protocol.js';
import type { PageResponse } from '../lib/cluster/pagetransport.js';

export interface BatchPageReaderOptions {
  pageSize: number;
  /** The ring the session reads by: a page's batch goes to its first owner. */
  owners(key: string): Member[];
  /** Credentials of page requests. */
  headers(): Record<string, string>;
  /** Connections and deadlines (first byte, idle) of the batch requests: the session's dispatcher. */
  dispatcher(): Dispatcher;
  /**
   * The session's lean page connections (lib/leanhttp), when page requests use them: batches go
   * there instead of undici, and their pages are views of its read slabs (share: a page's view
   * counted as lent until its reader releases it; release: a body chunk given back).
   */
  lean?: {
    post(member: Member, path: string, headers: Record<string, string>, body: Buffer): Promise<PageResponse>;
    share(view: Buffer): void;
    release(chunk: Buffer): void;
  };
  /** One page by /v1/page, with its retries elsewhere: for what a batch cannot carry or failed to. */
  fallback(ref: PageRef, signal?: AbortSignal): Promise<Buffer[]>;
  /** A worker known to be failing gets per-page requests (the reader routes around it). */
  isDemoted?(id: string): boolean;
  /** Sync prefetch and `fanout load`: lines serve client reads first. */
  preload?: boolean;
  /** A worker relaying to a page's owner: the owner reads its source itself, never relays again (peers only). */
  direct?: boolean;
  /** Items per batch (default 64). */
  maxItems?: number;
  /** Bytes of pages per batch (default 4 MiB). */
  maxBytes?: number;
  /** Batches in flight to one worker (default 4): while some travel, the next fill up. */
  batchesPerWorker?: number;
}

interface Waiting {
  ref: PageRef;
  length: number;
  resolve(page: Buffer[]): void;
  reject(err: unknown): void;
  signal: AbortSignal | undefined;
  settled: boolean;
  onAbort?: () => void;
}

/** Answers a batch item gives that /v1/page would give too: failing over would not change them. */
const FINAL: ReadonlySet<ErrorCode> = new Set(['NOT_FOUND', 'SOURCE_CHANGED', 'UNKNOWN_MOUNT', 'INVALID_PATH', 'INVALID_ARGUMENT', 'IS_A_DIRECTORY', 'RANGE_NOT_SATISFIABLE', 'FORBIDDEN', 'UNAUTHENTICATED', 'TOO_MANY_ATTEMPTS']);

/**
 * Many whole small pages per round trip (POST /v1/pages, lib/wire/batch.ts). Callers ask for
 * one page at a time, as of the per-page reader; pages are queued per owner and leave in
 * batches (at most maxItems and maxBytes each, batchesPerWorker at once per worker): while
 * batches travel, the next fill up, so the many files a stager or `cp` keeps in flight share
 * round trips without waiting for a timer. Every page is CRC32-checked as it arrives. A page
 * the batch did not bring (checksum failure, a worker's transient error, a worker stopped
 * mid-answer, a failed batch) is asked for again by /v1/page, which retries elsewhere; a worker
 * without the route (404, an older build) gets per-page requests from then on.
 */
export class BatchPageReader {
  private readonly queues = new Map<string, { member: Member; items: Waiting[]; inflight: number; scheduled: boolean }>();
  private readonly unsupported = new Set<string>();
  private readonly maxItems: number;
  private readonly maxBytes: number;
  private readonly perWorker: number;
  private readonly counts = { batches: 0, batched: 0, fallbacks: 0 };

  constructor(private readonly options: BatchPageReaderOptions) {
    this.maxItems = Math.min(options.maxItems ?? 64, BATCH_LIMITS.maxItems);
    this.maxBytes = Math.min(options.maxBytes ?? 4 * 1024 * 1024, BATCH_LIMITS.maxBatchBytes);
    this.perWorker = Math.max(1, options.batchesPerWorker ?? 4);
  }

  /** Whether its batches ask for direct source reads (a worker holding the cluster secret). */
  get direct(): boolean {
    return this.options.direct === true;
  }

  /** Batches sent, pages they brought, pages asked for again one by one (tests, status). */
  stats(): { batches: number; batched: number; fallbacks: number } {
    return { ...this.counts };
  }

  /** A whole page, verified (CRC32), as the chunks it arrived in. */
  fetchPage(ref: PageRef, signal?: AbortSignal): Promise<Buffer[]> {
    if (signal?.aborted) return Promise.reject(new FanoutError('ABORTED', 'page read aborted'));
    const { start, end } = pageSpan(ref.index, ref.size, this.options.pageSize);
    const length = end - start;
    const owner = this.options.owners(pageKey(ref, this.options.pageSize))[0];
    if (length > BATCH_LIMITS.maxItemBytes || !owner || this.unsupported.has(owner.id) || this.options.isDemoted?.(owner.id)) {
      return this.options.fallback(ref, signal);
    }
    return new Promise<Buffer[]>((resolve, reject) => {
      const item: Waiting = { ref, length, resolve, reject, signal, settled: false };
      // A caller that leaves is answered at once; its page, if it comes, is dropped.
      if (signal) {
        item.onAbort = () => settle(item, undefined, new FanoutError('ABORTED', 'page read aborted'));
        signal.addEventListener('abort', item.onAbort, { once: true });
      }
      let queue = this.queues.get(owner.id);
      if (!queue) this.queues.set(owner.id, (queue = { member: owner, items: [], inflight: 0, scheduled: false }));
      queue.member = owner;
      queue.items.push(item);
      this.pump(owner.id);
    });
  }

  /**
   * Pages queued for a worker wait one turn of the event loop for company (the other files'
   * opens and writes that complete in the same turn), unless a batch is full already.
   */
  private pump(id: string): void {
    const queue = this.queues.get(id);
    if (!queue || queue.items.length === 0) return;
    if (queue.items.length >= this.maxItems) return this.flush(id);
    if (queue.scheduled) return;
    queue.scheduled = true;
    setImmediate(() => {
      queue.scheduled = false;
      this.flush(id);
    });
  }

  /** Sends what is queued for a worker while it has batch room. */
  private flush(id: string): void {
    const queue = this.queues.get(id);
    if (!queue) return;
    while (queue.items.length > 0 && queue.inflight < this.perWorker) {
      const batch: Waiting[] = [];
      let bytes = 0;
      while (queue.items.length > 0 && batch.length < this.maxItems) {
        const item = queue.items[0]!;
        if (item.settled) {
          queue.items.shift();
          continue;
        }
        if (batch.length > 0 && bytes + item.length > this.maxBytes) break;
        batch.push(queue.items.shift()!);
        bytes += item.length;
      }
      if (batch.length === 0) break;
      queue.inflight++;
      void this.send(queue.member, batch).finally(() => {
        queue.inflight--;
        // What queued while this batch travelled leaves at once: it has waited already.
        if (queue.items.length > 0) this.flush(id);
        else if (queue.inflight === 0 && !queue.scheduled) this.queues.delete(id);
      });
    }
    if (queue.items.length === 0 && queue.inflight === 0 && !queue.scheduled) this.queues.delete(id);
  }

  private async send(member: Member, batch: Waiting[]): Promise<void> {
    this.counts.batches++;
    const body = JSON.stringify({ items: batch.map((w) => w.ref), pageSize: this.options.pageSize });
    const headers = { 'content-type': 'application/json', ...this.options.headers(), ...(this.options.preload ? { [HEADERS.trafficClass]: 'preload' } : {}), ...(this.options.direct ? { [HEADERS.direct]: '1' } : {}) };
    try {
      if (this.options.lean) await this.sendLean(this.options.lean, member, batch, Buffer.from(body), headers);
      else await this.sendUndici(member, batch, body, headers);
    } catch {
      // Whatever went wrong with the batch, the pages it did not bring are asked for one by one.
      for (const item of batch) if (!item.settled) this.retryAlone(item);
    }
  }

  /**
   * The batch on the lean page connections. The body's chunks are slab views (no copy); a frame
   * inside one chunk is a view of it, shared so its slab stays lent until the page's reader
   * releases it. The chunks themselves are given back once the answer is over: by then every
   * page cut from them is either shared or dropped.
   */
  private async sendLean(lean: NonNullable<BatchPageReaderOptions['lean']>, member: Member, batch: Waiting[], body: Buffer, headers: Record<string, string>): Promise<void> {
    const response = await lean.post(member, ROUTES.pages, headers, body);
    const received: Buffer[] = [];
    const handedOn = new Set<Buffer>();
    try {
      if (response.statusCode !== 200) {
        this.refused(member, response.statusCode, response.headers[HEADERS.error]);
        response.destroy();
        throw new FanoutError('WORKER_UNAVAILABLE', `batch request to ${member.id} answered ${response.statusCode}`);
      }
      const frames = new FrameReader(batch.length);
      let answered = 0;
      try {
        for await (const chunk of response.body) {
          received.push(chunk);
          for (const frame of frames.push(chunk)) {
            answered++;
            const item = batch[frame.index]!;
            if (frame.kind !== 'page') {
              this.answer(item, frame);
              continue;
            }
            // A page whose bytes are a whole body chunk takes that chunk over (it is not released
            // below); a piece of one is counted as lent on its own. A page nobody takes is given back.
            for (const view of frame.chunks) {
              if (view === chunk || received.includes(view)) handedOn.add(view);
              else lean.share(view);
            }
            if (!this.answer(item, frame)) {
              for (const view of frame.chunks) {
                handedOn.delete(view);
                lean.release(view);
              }
            }
          }
        }
      } catch (err) {
        response.destroy();
        throw err;
      }
      if (!frames.complete) throw new FanoutError('WORKER_UNAVAILABLE', `batch answer from ${member.id} ended after ${answered} of ${batch.length} pages`);
    } finally {
      for (const chunk of received) if (!handedOn.has(chunk)) lean.release(chunk);
    }
  }

  /** An older worker has no such route: per-page requests to it from now on. */
  private refused(member: Member, statusCode: number, error: string | string[] | undefined): void {
    if (statusCode === 404 && error !== 'UNKNOWN_MOUNT') this.unsupported.add(member.id);
  }

  private async sendUndici(member: Member, batch: Waiting[], requestBody: string, headers: Record<string, string>): Promise<void> {
    let answered = 0;
    const response = await undici().request(`${member.url}${ROUTES.pages}`, { method: 'POST', body: requestBody, headers, dispatcher: this.options.dispatcher() });
    if (response.statusCode !== 200) {
      this.refused(member, response.statusCode, response.headers[HEADERS.error]);
      await response.body.dump().catch(() => {});
      throw new FanoutError('WORKER_UNAVAILABLE', `batch request to ${member.id} answered ${response.statusCode}`);
    }
    const frames = new FrameReader(batch.length);
    // 'data' events, not `for await`: the async iterator read()s whatever is buffered as one
    // Buffer.concat of it, a copy of every page (a quarter of the mount's CPU per small file).
    const body = response.body;
    await new Promise<void>((resolve, reject) => {
      body.on('data', (chunk: Buffer) => {
        try {
          for (const frame of frames.push(chunk)) {
            answered++;
            this.answer(batch[frame.index]!, frame);
          }
        } catch (err) {
          body.destroy();
          reject(err);
        }
      });
      body.once('end', resolve);
      body.once('error', reject);
      body.once('close', () => reject(new FanoutError('WORKER_UNAVAILABLE', `batch answer from ${member.id} closed early`)));
    });
    if (!frames.complete) throw new FanoutError('WORKER_UNAVAILABLE', `batch answer from ${member.id} ended after ${answered} of ${batch.length} pages`);
  }

  /** Settles an item with its frame; true when the frame's page went to the item's reader. */
  private answer(item: Waiting, frame: BatchFrame): boolean {
    if (item.settled) return false;
    if (frame.kind === 'page') {
      let length = 0;
      for (const chunk of frame.chunks) length += chunk.length;
      if (length !== item.length) {
        this.retryAlone(item);
        return false;
      }
      this.counts.batched++;
      settle(item, frame.chunks);
      return true;
    }
    if (FINAL.has(frame.error.code)) settle(item, undefined, frame.error);
    else this.retryAlone(item);
    return false;
  }

  private retryAlone(item: Waiting): void {
    if (item.settled) return;
    this.counts.fallbacks++;
    this.options.fallback(item.ref, item.signal).then(
      (page) => settle(item, page),
      (err) => settle(item, undefined, err),
    );
  }
}

function settle(item: Waiting, page: Buffer[] | undefined, err?: unknown): void {
  if (item.settled) return;
  item.settled = true;
  if (item.onAbort) item.signal?.removeEventListener('abort', item.onAbort);
  if (page) item.resolve(page);
  else item.reject(err);
}
