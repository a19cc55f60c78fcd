import { FanoutError, type ErrorCode, ErrorCodes } from '../../core/errors.js';
import { crc32 } from '../checksum/index.js';

/**
 * The batch page request: POST /v1/pages with a JSON body listing whole small pages, answered
 * by one framed binary stream. A search index is thousands of 64 KiB files: one request and one
 * response head per file was the per-file cost that bounded sync and `cp` of a tree, so many
 * whole pages travel in one round trip. Items are answered in whatever order the worker has them
 * (a stored page does not wait behind a fill), each in its own frame:
 *
 *   u32 item index | u8 kind (0 page, 1 error, 2 end) | 3 zero bytes | u32 payload length | u32 CRC32 of the payload
 *
 * all big-endian, then the payload: the page's bytes, or for an error a JSON {code, message}.
 * An end frame (index = item count, length 0) closes a complete answer, so a response cut short
 * (a worker stopped mid-batch) is told from a finished one.
 */
export const BATCH_CONTENT_TYPE = 'application/x-fanout-pages';
export const FRAME_HEAD = 16;

export const BATCH_LIMITS = {
  /** Items in one request. */
  maxItems: 512,
  /** Bytes of one request body (512 items of long paths fit). */
  maxBodyBytes: 1024 * 1024,
  /** A page bigger than this is not "small": it goes by /v1/page, streamed. */
  maxItemBytes: 1024 * 1024,
  /** Bytes of pages one request may ask for (the response's length, bounded). */
  maxBatchBytes: 16 * 1024 * 1024,
  /** An error payload's length (a hostile peer cannot make a reader buffer much). */
  maxErrorBytes: 4096,
} as const;

export const FRAME_KIND = { page: 0, error: 1, end: 2 } as const;
export type FrameKind = (typeof FRAME_KIND)[keyof typeof FRAME_KIND];


/** The head of one frame (the payload is written after it, unchanged: no copy into a frame buffer). */
export function frameHead(index: number, kind: FrameKind, payload: Buffer | undefined, crc = payload ? crc32(payload) : 0): Buffer {
  const head = Buffer.allocUnsafe(FRAME_HEAD);
  writeFrameHead(head, index, kind, payload?.length ?? 0, crc);
  return head;
}

/** Writes a frame head into the first FRAME_HEAD bytes of `target` (a buffer with the payload right after it). */
export function writeFrameHead(target: Buffer, index: number, kind: FrameKind, length: number, crc: number): void {
  target.writeUInt32BE(index, 0);
  target.writeUInt8(kind, 4);
  target.writeUIntBE(0, 5, 3);
  target.writeUInt32BE(length, 8);
  target.writeUInt32BE(crc >>> 0, 12);
}

/** An error frame: its code survives the wire as the code of a FanoutError on the reader's side. */
export function errorFrame(index: number, err: FanoutError): Buffer[] {
  const payload = Buffer.from(JSON.stringify({ code: err.code, message: err.message.slice(0, 1000) }));
  return [frameHead(index, FRAME_KIND.error, payload), payload];
}

export function endFrame(items: number): Buffer {
  return frameHead(items, FRAME_KIND.end, undefined);
}

/** A page frame's bytes come as the chunks they arrived in (views, no copy); `data` joins them. */
export type BatchFrame = { index: number; kind: 'page'; chunks: Buffer[]; readonly data: Buffer; crc: number } | { index: number; kind: 'error'; error: FanoutError };

/**
 * Reads frames from a response body's chunks. Every field is checked before a byte is kept: an
 * index outside the request, a length over the limits, an unknown kind or non-zero padding is a
 * broken answer (WORKER_UNAVAILABLE: ask elsewhere), a page whose CRC32 differs is
 * CHECKSUM_MISMATCH for that item only. The page's CRC is returned so a reader need not compute
 * it again. Memory held: one frame (≤ maxItemBytes) at a time.
 */
export class FrameReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private head: { index: number; kind: number; length: number; crc: number } | undefined;
  private ended = false;
  private readonly seen = new Set<number>();

  constructor(
    private readonly items: number,
    private readonly maxItemBytes: number = BATCH_LIMITS.maxItemBytes,
  ) {}

  /** Whether the end frame arrived (after it, nothing more may). */
  get complete(): boolean {
    return this.ended;
  }

  /** Frames completed by this chunk; per-item checksum failures come back as error frames. */
  push(chunk: Buffer): BatchFrame[] {
    if (chunk.length === 0) return [];
    if (this.ended) throw broken('bytes after the end frame');
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const frames: BatchFrame[] = [];
    while (!this.ended) {
      if (!this.head) {
        if (this.pendingBytes < FRAME_HEAD) break;
        this.head = this.parseHead(this.take(FRAME_HEAD));
        if (this.head.kind === FRAME_KIND.end) {
          this.ended = true;
          if (this.pendingBytes > 0) throw broken('bytes after the end frame');
          if (this.seen.size !== this.items) throw broken(`the end frame came after ${this.seen.size} of ${this.items} items`);
          break;
        }
      }
      if (this.pendingBytes < this.head.length) break;
      const { index, kind, length, crc } = this.head;
      this.head = undefined;
      if (kind === FRAME_KIND.page) {
        // A page spans the socket's chunks (64 KiB reads): kept as views, checked across them.
        const chunks = this.takeChunks(length);
        let sum = 0;
        for (const chunk of chunks) sum = crc32(chunk, sum);
        if ((sum >>> 0) !== crc) {
          frames.push({ index, kind: 'error', error: new FanoutError('CHECKSUM_MISMATCH', `page ${index} of the batch failed its CRC32`) });
        } else frames.push({ index, kind: 'page', chunks, crc, get data() { return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks); } });
      } else frames.push({ index, kind: 'error', error: decodeError(this.take(length), crc) });
    }
    return frames;
  }

  private parseHead(bytes: Buffer): { index: number; kind: number; length: number; crc: number } {
    const index = bytes.readUInt32BE(0);
    const kind = bytes.readUInt8(4);
    const length = bytes.readUInt32BE(8);
    const crc = bytes.readUInt32BE(12);
    if (bytes.readUIntBE(5, 3) !== 0) throw broken('non-zero padding in a frame head');
    if (kind === FRAME_KIND.end) {
      if (index !== this.items || length !== 0) throw broken('a malformed end frame');
      return { index, kind, length, crc };
    }
    if (kind !== FRAME_KIND.page && kind !== FRAME_KIND.error) throw broken(`unknown frame kind ${kind}`);
    if (index >= this.items) throw broken(`frame for item ${index} of a ${this.items}-item request`);
    if (this.seen.has(index)) throw broken(`item ${index} answered twice`);
    const max = kind === FRAME_KIND.page ? this.maxItemBytes : BATCH_LIMITS.maxErrorBytes;
    if (length > max) throw broken(`a ${length}-byte frame (at most ${max})`);
    this.seen.add(index);
    return { index, kind, length, crc };
  }

  /** The next `n` pending bytes as views of the chunks they sit in. */
  private takeChunks(n: number): Buffer[] {
    this.pendingBytes -= n;
    const out: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const chunk = this.pending[0]!;
      if (chunk.length <= left) {
        out.push(chunk);
        this.pending.shift();
        left -= chunk.length;
      } else {
        out.push(chunk.subarray(0, left));
        this.pending[0] = chunk.subarray(left);
        left = 0;
      }
    }
    return out;
  }

  /** The next `n` pending bytes as one buffer (a view when they sit in one chunk). */
  private take(n: number): Buffer {
    this.pendingBytes -= n;
    const first = this.pending[0];
    if (n === 0) return Buffer.alloc(0);
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.pending.shift();
      else this.pending[0] = first.subarray(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const chunk = this.pending[0]!;
      const used = Math.min(chunk.length, n - at);
      chunk.copy(out, at, 0, used);
      at += used;
      if (used === chunk.length) this.pending.shift();
      else this.pending[0] = chunk.subarray(used);
    }
    return out;
  }
}

function decodeError(payload: Buffer, crc: number): FanoutError {
  if ((crc32(payload) >>> 0) !== crc) return new FanoutError('CHECKSUM_MISMATCH', 'an error frame failed its CRC32');
  try {
    const body = JSON.parse(payload.toString('utf8')) as { code?: unknown; message?: unknown };
    const code = typeof body.code === 'string' && body.code in ErrorCodes ? (body.code as ErrorCode) : 'INTERNAL';
    return new FanoutError(code, typeof body.message === 'string' ? body.message : 'batch item failed');
  } catch {
    return new FanoutError('INTERNAL', 'an unreadable error frame');
  }
}

function broken(what: string): FanoutError {
  return new FanoutError('WORKER_UNAVAILABLE', `malformed batch response: ${what}`);
}
