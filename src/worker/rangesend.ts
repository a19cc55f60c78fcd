import type { ServerResponse } from 'node:http';
import { abortError } from '../core/errors.js';
import { pageSlice, pagesForRange } from '../core/pages.js';
import type { FileInfo, PageRef } from '../core/types.js';
import type { ClusterReader } from '../lib/cluster/index.js';
import type { Semaphore } from '../lib/transfer/index.js';
import { copySlice, type ResponseFlow } from './flow.js';
import type { Clock } from '../core/clock.js';
import { PAGE_HOLD_MS } from './pageservice.js';
import { MAX_RUN_PAGES, type LocalSpans, type PageSpan } from './localspans.js';

export interface RangeSendOptions {
  reader: ClusterReader;
  /** Response page slots shared by every response of this worker (PageService.responseSlots). */
  slots: Semaphore;
  flow: ResponseFlow;
  pageSize: number;
  /** Pages fetched ahead of the one being sent, while the client keeps up and slots are free. */
  window: number;
  signal: AbortSignal;
  /** Gives a page's buffers back to where they came from (the store's pool) once copied out. */
  release?: (chunk: Buffer) => void;
  /** Pages stored here go out by the kernel (sendfile) instead of through the flow (see localspans.ts). */
  local?: LocalSpans;
}

interface HeldPage {
  page: Promise<Buffer[]>;
  stop: AbortController;
  release: () => void;
}

/**
 * Sends bytes [start, end) of a file, page by page through the cluster, with memory bounded
 * whatever the client does: each page held needs one of the worker's response slots; pages are
 * fetched ahead only while the client takes what it is sent and nobody waits for a slot; and a
 * client whose socket stays full gives its page (and prefetched ones) back when others wait or
 * after PAGE_HOLD_MS, fetching it again when its socket has room. (ClusterReader.chunks prefetches a fixed window
 * whether or not the client reads; this is the worker's own, backpressure-aware window.)
 */
export async function sendRange(res: ServerResponse, options: RangeSendOptions, mount: string, file: FileInfo, start: number, end: number, writeHead: () => void): Promise<void> {
  const { reader, slots, flow, pageSize, window, signal, local } = options;
  const giveBack = (page: Promise<Buffer[]>) => void page.then((chunks) => chunks.forEach((c) => options.release?.(c)), () => {});
  const { first, last } = pagesForRange(start, end, pageSize);
  const ahead = new Map<number, HeldPage>();
  const refOf = (index: number): PageRef => ({ mount, path: file.path, version: file.version, size: file.size, index });
  const fetch = (index: number, release: () => void): HeldPage => {
    const stop = new AbortController();
    const onAbort = () => stop.abort(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    const page = reader.fetchPage(refOf(index), stop.signal);
    page.catch(() => {}).finally(() => signal.removeEventListener('abort', onAbort));
    return { page, stop, release };
  };
  const drop = (held: HeldPage) => {
    held.stop.abort();
    held.release();
    giveBack(held.page);
  };
  const dropAhead = () => {
    for (const held of ahead.values()) drop(held);
    ahead.clear();
  };
  const prefetch = (from: number) => {
    for (let index = from; index <= last && index < from + window - 1; index++) {
      if (ahead.has(index) || local?.has(refOf(index))) continue;
      if (flow.full) return;
      const release = slots.tryAcquire();
      if (!release) return;
      ahead.set(index, fetch(index, release));
    }
  };
  let headed = false;
  /** Whether the client took the last page within PAGE_HOLD_MS: only then is fetching ahead worth memory. */
  let keepingUp = false;
  try {
    for (let index = first; index <= last; index++) {
      let { from: at, to } = pageSlice(index, start, end, pageSize);
      if (local && !ahead.has(index) && local.has(refOf(index))) {
        // This page and the stored ones right after it leave in one kernel send.
        const run: PageSpan[] = [{ ref: refOf(index), from: at, to }];
        for (let next = index + 1; next <= last && run.length < MAX_RUN_PAGES && !ahead.has(next) && local.has(refOf(next)); next++) {
          const { from, to } = pageSlice(next, start, end, pageSize);
          run.push({ ref: refOf(next), from, to });
        }
        // Remote pages further on are fetched while the kernel sends these.
        if (keepingUp) prefetch(index + run.length);
        const since = flow.now();
        // The head only once the pages are open: before, it was written first, and a page file
        // that could not be opened (EMFILE) cut the connection instead of answering its error.
        const sent = await local.sendRun(run, () => {
          if (!headed) writeHead();
          headed = true;
        });
        if (sent > 0) {
          keepingUp = flow.now() - since < PAGE_HOLD_MS * sent;
          index += sent - 1;
          continue;
        }
      }
      while (at < to) {
        let held = ahead.get(index);
        ahead.delete(index);
        held ??= fetch(index, await slots.acquire(signal));
        try {
          const chunks = await held.page;
          if (!headed) writeHead();
          headed = true;
          if (keepingUp) prefetch(index + 1);
          const since = flow.now();
          while (at < to) {
            at = writePage(flow, chunks, at, to);
            if (at >= to) break;
            if (slots.waiting > 0 || flow.now() - since >= PAGE_HOLD_MS) {
              keepingUp = false;
              dropAhead(); // others wait for memory, or the client is slow: it keeps none in reserve
              break;
            }
            await flow.room();
          }
          if (at >= to && flow.now() - since < PAGE_HOLD_MS) keepingUp = true;
        } finally {
          drop(held); // copied out (or failed): the page and its slot go back
        }
        if (at < to) await flow.room();
      }
    }
    res.end();
  } finally {
    dropAhead();
  }
}

/** Queues page bytes [at, to) (offsets within the page) as far as the flow takes; returns where it stopped. */
function writePage(flow: ResponseFlow, chunks: Buffer[], at: number, to: number): number {
  let offset = 0;
  for (const chunk of chunks) {
    const chunkEnd = offset + chunk.length;
    if (chunkEnd > at && offset < to) {
      const stopped = flow.write(chunk, at - offset, Math.min(to, chunkEnd) - offset);
      at = offset + stopped;
      if (at < Math.min(to, chunkEnd)) return at;
    }
    offset = chunkEnd;
    if (offset >= to) break;
  }
  return at;
}

export interface PagedChunksOptions {
  reader: ClusterReader;
  slots: Semaphore;
  pageSize: number;
  clock: Clock;
  signal: AbortSignal;
  release?: (chunk: Buffer) => void;
}

/**
 * The bytes [start, end) of a file as pooled copies (return them with returnSlice once written),
 * for writers that pull chunks (the S3 gateway's GetObject). One page at a time, under a response
 * slot; a page whose consumer has not pulled for PAGE_HOLD_MS is given back (slot and buffer) and
 * fetched again on the next pull, so a client that stops reading holds only the slice it was
 * given, not pages. (ClusterReader.chunks keeps an 8-page window whatever the client does.)
 */
export async function* pagedChunks(options: PagedChunksOptions, mount: string, file: FileInfo, start: number, end: number): AsyncGenerator<Buffer> {
  const { reader, slots, pageSize, clock, signal } = options;
  const { first, last } = pagesForRange(start, end, pageSize);
  let held: { data: Buffer; chunks: Buffer[]; release: () => void } | undefined;
  let timer: NodeJS.Timeout | undefined;
  const letGo = () => {
    clearTimeout(timer);
    if (!held) return;
    held.release();
    for (const chunk of held.chunks) options.release?.(chunk);
    held = undefined;
  };
  try {
    for (let index = first; index <= last; index++) {
      let { from: at, to } = pageSlice(index, start, end, pageSize);
      while (at < to) {
        if (!held) {
          const release = await slots.acquire(signal);
          try {
            const ref: PageRef = { mount, path: file.path, version: file.version, size: file.size, index };
            const chunks = await reader.fetchPage(ref, signal);
            held = { data: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), chunks, release };
          } catch (err) {
            release();
            throw err;
          }
        }
        const slice = copySlice(held.data, at, to);
        at += slice.length;
        if (at >= to) letGo();
        else {
          // Suspended at the yield until the client has room: past PAGE_HOLD_MS the page goes back.
          clearTimeout(timer);
          const since = clock.now();
          timer = setTimeout(() => clock.now() - since >= PAGE_HOLD_MS && letGo(), PAGE_HOLD_MS);
        }
        yield slice;
        clearTimeout(timer);
      }
    }
  } finally {
    letGo();
  }
}
