import { SlabPool } from '../leanhttp/index.js';
import { slabBuffer } from '../memory/index.js';

/**
 * Read memory that sources lend with the chunks they yield, taken back with releaseSourceChunk()
 * once the reader has copied a chunk (a worker's fill copies each into its page). Fresh buffers
 * per read were most of a cold read's garbage: a worker reading 1 GiB cold ran 3–45 major
 * collections; with reused memory, 2 (docs/benchmarks.md). A chunk nobody gives back is simply
 * collected.
 */

/** HTTP sources: the lean client reads into these slabs (16 idle slabs of 1 MiB at most). */
export const httpSlabs = new SlabPool(16);

/**
 * Buffers of one size lent as views: a view given back returns its buffer to the free list (at
 * most `maxFree` kept). Only buffers this lender made, and each once.
 */
export class ChunkLender {
  private readonly free: Buffer[] = [];
  private readonly lent = new WeakMap<Buffer, Buffer>();

  constructor(
    readonly size: number,
    private readonly maxFree: number,
  ) {}

  /** A buffer to read into (reused or new). */
  take(): Buffer {
    return this.free.pop() ?? slabBuffer(this.size); // kept and reused: in huge pages where it can be (lib/memory)
  }

  /** The first `length` bytes of `buffer` (from take()), lent until given back. */
  lend(buffer: Buffer, length: number): Buffer {
    const view = buffer.subarray(0, length);
    this.lent.set(view, buffer);
    return view;
  }

  /** Returns a buffer that was taken but not lent (an empty read). */
  putBack(buffer: Buffer): void {
    if (this.free.length < this.maxFree) this.free.push(buffer);
  }

  /** Gives back a lent view; a no-op for any other buffer or a second time. */
  release(view: Buffer): void {
    const buffer = this.lent.get(view);
    if (!buffer) return;
    this.lent.delete(view);
    this.putBack(buffer);
  }
}

/** Directory sources read big ranges 1 MiB at a time into these. */
export const LOCAL_CHUNK = 1024 * 1024;
export const localChunks = new ChunkLender(LOCAL_CHUNK, 16);

/** Gives back a chunk a source's read() yielded, once it is copied (a no-op for any other buffer). */
export function releaseSourceChunk(chunk: Buffer): void {
  httpSlabs.release(chunk);
  localChunks.release(chunk);
}
