import { setMaxListeners } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pageSpan } from '../core/pages.js';
import { FanoutError } from '../core/errors.js';
import type { PageRef } from '../core/types.js';
import type { VerifiedPage } from '../lib/pagestore/index.js';
import { ByteBudget, type Semaphore } from '../lib/transfer/index.js';
import type { TrafficClass } from '../lib/lines/index.js';
import { BATCH_CONTENT_TYPE, BATCH_LIMITS, FRAME_HEAD, FRAME_KIND, batchRequestSchema, endFrame, errorFrame, frameHead, writeFrameHead } from '../lib/wire/index.js';
import { BufferPool } from '../lib/pagestore/index.js';
import type { ResponseFlow } from './flow.js';
import { checkPageSize, readJsonBody, toFanoutError } from './http.js';

/** What a batch answer uses of the worker: the page checks of /v1/page and the page service. */
export interface BatchPagesDeps {
  pageSize: number;
  /** The checks /v1/page makes of one page (mount, version and size, content hash): throws per item. */
  check(ref: PageRef): Promise<void>;
  /**
   * A stored page read into `into(size)` and verified, or undefined when it is not stored or a fill
   * of it runs (PageService.readStored): warm items go out from the buffer they were read into.
   */
  readStored?(ref: PageRef, into: (size: number) => Buffer): Promise<{ data: Buffer; crc: number } | undefined>;
  /** A whole page from the store or its single-flight fill (PageService.wholePage). */
  wholePage(ref: PageRef, direct: boolean, cls: TrafficClass, signal: AbortSignal): Promise<VerifiedPage>;
  responseSlots: Semaphore;
  /** Batch answers at once (PageService.batchSlots), taken before the request body is read. */
  batchSlots: Semaphore;
  flow(res: ServerResponse): ResponseFlow;
  /** Pages owned elsewhere, fetched from their owners in batches (none: filled here page by page). */
  relay?: BatchRelay;
}

export interface BatchRelay {
  /** Whether this worker holds or owns the page (then it answers it itself). */
  owns(ref: PageRef): boolean;
  /** The page from its owner, CRC32-verified. */
  fetch(ref: PageRef, signal: AbortSignal): Promise<Buffer[]>;
}

/**
 * How long a batch waits for a batch slot before it is answered 503 OVERLOADED (its body unread):
 * the reader then asks for its pages one by one, which hits served by the kernel do without a slot.
 */
export const BATCH_ADMISSION_MS = 1000;

/** Items fetched at once within one batch (store reads and fills overlap; frames leave as each is ready). */
const ITEM_CONCURRENCY = 32;
/**
 * Warm items' frame buffers (a frame head, then the page read from the store right after it),
 * shared by every batch answer of the process and reused once the socket is done with them; up to
 * 16 MiB of idle ones kept.
 */
const itemBuffers = new BufferPool(FRAME_HEAD + BATCH_LIMITS.maxItemBytes, 4, 16 * 1024 * 1024);

/**
 * POST /v1/pages: many whole small pages in one framed answer (lib/wire/batch.ts). Each item
 * gets exactly what GET /v1/page would give it (the same checks, the store or the same single
 * flight and fill limits), and its own frame: a page, or an error with its stable code, so a
 * missing file in the middle fails that item only. Pages owned elsewhere go to their owner in one
 * batch per owner (relay); what that does not bring is filled as /v1/page fills it.
 * Memory: a batch slot, taken before the body is read (so waiting batches hold no parsed body),
 * then one response slot, and at most one page size of item bytes held between being read and
 * being written to the client.
 */
export async function serveBatch(deps: BatchPagesDeps, req: IncomingMessage, res: ServerResponse, direct: boolean, cls: TrafficClass): Promise<void> {
  const gone = new AbortController();
  // Every item in flight waits on it (memory, fill, slot): more than Node's default 10 listeners is
  // the design, not a leak (the warning was printed, with a stack, once per batch).
  setMaxListeners(ITEM_CONCURRENCY * 4, gone.signal);
  res.once('close', () => res.writableFinished || gone.abort(new FanoutError('ABORTED', 'client went away')));
  const releaseBatch = deps.batchSlots.tryAcquire() ?? (await admitted(deps.batchSlots, gone.signal));
  try {
    await answerBatch(deps, req, res, direct, cls, gone);
  } finally {
    releaseBatch();
  }
}

/** A batch slot within BATCH_ADMISSION_MS, else OVERLOADED; ABORTED if the client leaves first. */
async function admitted(slots: Semaphore, gone: AbortSignal): Promise<() => void> {
  const deadline = AbortSignal.timeout(BATCH_ADMISSION_MS);
  try {
    return await slots.acquire(AbortSignal.any([gone, deadline]));
  } catch (err) {
    if (gone.aborted || !deadline.aborted) throw err;
    throw new FanoutError('OVERLOADED', `${slots.size} batch answers in progress for ${BATCH_ADMISSION_MS} ms: ask for these pages one by one`);
  }
}

async function answerBatch(deps: BatchPagesDeps, req: IncomingMessage, res: ServerResponse, direct: boolean, cls: TrafficClass, gone: AbortController): Promise<void> {
  const { items, pageSize } = await readItems(req);
  if (pageSize !== undefined) checkPageSize(pageSize, deps.pageSize);
  let total = 0;
  const lengths = items.map((ref) => {
    try {
      const { start, end } = pageSpan(ref.index, ref.size, deps.pageSize);
      total += end - start;
      if (end - start > BATCH_LIMITS.maxItemBytes) {
        throw new FanoutError('REQUEST_TOO_LARGE', `page ${ref.index} of /${ref.mount}/${ref.path} is ${end - start} bytes: a batch carries pages of at most ${BATCH_LIMITS.maxItemBytes} bytes`);
      }
      return end - start;
    } catch (err) {
      if (err instanceof FanoutError && err.code === 'REQUEST_TOO_LARGE') throw err;
      return err as Error;
    }
  });
  if (total > BATCH_LIMITS.maxBatchBytes) throw new FanoutError('REQUEST_TOO_LARGE', `a batch of ${total} bytes of pages (at most ${BATCH_LIMITS.maxBatchBytes})`);

  const releaseSlot = await deps.responseSlots.acquire(gone.signal);
  try {
    const flow = deps.flow(res);
    const held = new ByteBudget(Math.max(deps.pageSize, BATCH_LIMITS.maxItemBytes));
    res.writeHead(200, { 'content-type': BATCH_CONTENT_TYPE });
    // The head leaves now: the reader's first-byte deadline must not wait for the first cold fill.
    res.flushHeaders();
    // Frames leave one at a time: a frame's head and payload are never split by another's.
    let writing: Promise<void> = Promise.resolve();
    const send = (buffers: Buffer[]) => (writing = writing.then(() => writeAll(flow, buffers)));
    // A frame written from its own buffer; `done` once the socket has finished with it.
    const sendOwn = (frame: Buffer, done: () => void) => (writing = writing.then(() => writeOwn(flow, frame, done)));
    /** A warm item: read from the store right after its frame head, sent from that buffer. */
    const sendStored = async (i: number): Promise<boolean> => {
      if (!deps.readStored) return false;
      let buffer: Buffer | undefined;
      const page = await deps.readStored(items[i]!, (size) => (buffer = itemBuffers.acquire(FRAME_HEAD + size)).subarray(FRAME_HEAD)).catch((err) => {
        if (buffer) itemBuffers.release(buffer);
        throw err;
      });
      if (!page) {
        if (buffer) itemBuffers.release(buffer);
        return false;
      }
      const frame = buffer!.subarray(0, FRAME_HEAD + page.data.length);
      writeFrameHead(frame, i, FRAME_KIND.page, page.data.length, page.crc);
      await sendOwn(frame, () => itemBuffers.release(buffer!));
      return true;
    };
    let next = 0;
    const worker = async () => {
      while (next < items.length && !gone.signal.aborted) {
        const i = next++;
        const length = lengths[i]!;
        if (length instanceof Error) {
          await send(errorFrame(i, toFanoutError(length)));
          continue;
        }
        const release = await held.acquire(length, gone.signal);
        let page: VerifiedPage | undefined;
        try {
          await deps.check(items[i]!);
          if (!direct && deps.relay && !deps.relay.owns(items[i]!)) {
            const chunks = await deps.relay.fetch(items[i]!, gone.signal);
            const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
            await send([frameHead(i, FRAME_KIND.page, data), data]);
          } else if (!(await sendStored(i))) {
            page = await deps.wholePage(items[i]!, direct, cls, gone.signal);
            await send([frameHead(i, FRAME_KIND.page, page.data, page.crc), page.data]);
          }
        } catch (err) {
          if (gone.signal.aborted) throw err;
          await send(errorFrame(i, toFanoutError(err)));
        } finally {
          // The flow copied the bytes into its own slices: the page can go back at once.
          page?.release();
          release();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(ITEM_CONCURRENCY, items.length) }, worker));
    await send([endFrame(items.length)]);
    res.end();
  } catch (err) {
    // Mid-answer the only honest signal is a cut connection: the reader sees no end frame.
    res.destroy();
    if (!gone.signal.aborted) throw err;
  } finally {
    releaseSlot();
  }
}

async function writeAll(flow: ResponseFlow, buffers: Buffer[]): Promise<void> {
  for (const buffer of buffers) {
    let at = 0;
    while (at < buffer.length) {
      at = flow.write(buffer, at, buffer.length);
      if (at < buffer.length) await flow.room();
    }
  }
}

/**
 * Queues `frame` itself on the response (no copy), waiting for room as the flow allows; `done`
 * runs once every socket write of it has finished (or failed: the flow lets go of its writes when
 * the response closes), never while the socket may still read it.
 */
async function writeOwn(flow: ResponseFlow, frame: Buffer, done: () => void): Promise<void> {
  let writes = 0;
  let queued = false;
  const pin = () => {
    writes++;
    let pinned = true;
    return () => {
      if (!pinned) return;
      pinned = false;
      if (--writes === 0 && queued) done();
    };
  };
  try {
    let at = 0;
    while (at < frame.length) {
      at = flow.writeShared(frame, at, frame.length, pin);
      if (at < frame.length) await flow.room();
    }
  } finally {
    queued = true;
    if (writes === 0) done();
  }
}

async function readItems(req: IncomingMessage): Promise<{ items: PageRef[]; pageSize?: number }> {
  const raw = await readJsonBody(req, BATCH_LIMITS.maxBodyBytes, 'batch request');
  const parsed = batchRequestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const tooMany = issue.code === 'too_big' && issue.path.length === 1;
    throw new FanoutError(tooMany ? 'REQUEST_TOO_LARGE' : 'INVALID_ARGUMENT', `batch request: ${issue.message}${issue.path.length ? ` at "${issue.path.join('.')}"` : ''}; expected {"items":[{mount,path,version,size,index,hash?}, …]} with 1–${BATCH_LIMITS.maxItems} items`);
  }
  return parsed.data;
}
