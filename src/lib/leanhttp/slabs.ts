import { slabBuffer } from '../memory/index.js';

/**
 * Read memory for plain sockets: slabs the kernel reads into, whose body bytes are handed on
 * as views (no copy), and which are read into again once every view lent from them has been
 * given back with release().
 *
 * Why reuse matters: on these machines the cost of receiving is the memory, not the parsing.
 * A raw socket reader that CRCs each read in one reused buffer used 0.22–0.25 s of CPU per
 * 256 MiB; the same reader given a fresh buffer per read 0.6–1.1 s (fresh pages fault in and
 * miss every cache). Views that are never released are simply garbage-collected with their slab.
 */
/**
 * Each open connection holds one slab (idle connections close after 4 s). Measured against
 * 256 KiB slabs on a 256 MiB read: 0.19–0.24 s of CPU against 0.33–0.46 s (fewer, longer reads;
 * fewer slabs retired half used); the raw reader took 0.17–0.21 s.
 */
export const SLAB_BYTES = 1024 * 1024;
/** A slab with less room left than this is retired before the next read. */
const MIN_READ = 64 * 1024;

class Slab {
  /** In huge pages where it can be (lib/memory): a fresh command faults its slabs in as its first pages arrive. */
  readonly buf = slabBuffer(SLAB_BYTES);
  /** Where the next read goes. */
  at = 0;
  /** Views lent and not yet released. */
  lent = 0;
  /** No more reads go into it: back to the pool once `lent` reaches 0. */
  retired = false;
}

export class SlabPool {
  private readonly free: Slab[] = [];
  private readonly owners = new WeakMap<Buffer, Slab>();
  /** Each slab by its memory: a view cut from a lent chunk (a batch's page frame) finds its slab. */
  private readonly byMemory = new WeakMap<ArrayBufferLike, Slab>();

  /**
   * @param maxFree slabs kept for reuse at most (bounds the memory held while nothing is read).
   * A reader's window of 8 pages of 4 MiB keeps 32 slabs lent plus one per connection: with 16,
   * a `fanout cat` of 1 GiB kept allocating fresh slabs, whose pages fault in (client CPU 1.85 s,
   * 0.99 s of it in the kernel); with 48, 1.33–1.41 s (0.53–0.57 s kernel), wall 1.89 → 1.38 s.
   */
  constructor(private readonly maxFree = 48) {}

  /** A reader's slabs: the buffer for the next read, and the bookkeeping after it. */
  reader(): SlabReader {
    return new SlabReader(this);
  }

  /** Gives back a view lent by a reader (a no-op for any other buffer, or a second time). */
  release(chunk: Buffer): void {
    const slab = this.owners.get(chunk);
    if (!slab) return;
    this.owners.delete(chunk);
    slab.lent--;
    if (slab.retired && slab.lent === 0) this.recycle(slab);
  }

  /**
   * Counts `view`, a piece of a chunk this pool lent (a frame cut out of a batch answer), as lent
   * too: its slab is not read into again until it is released. A no-op for other memory or a view
   * already counted. The chunk it was cut from is released on its own.
   */
  share(view: Buffer): void {
    if (this.owners.has(view)) return;
    const slab = this.byMemory.get(view.buffer);
    if (slab) this.lend(slab, view);
  }

  /** @internal */
  take(): Slab {
    const reused = this.free.pop();
    if (reused) return reused;
    const slab = new Slab();
    this.byMemory.set(slab.buf.buffer, slab);
    return slab;
  }

  /** @internal */
  lend(slab: Slab, view: Buffer): void {
    slab.lent++;
    this.owners.set(view, slab);
  }

  /** @internal */
  recycle(slab: Slab): void {
    if (this.free.length >= this.maxFree) return;
    slab.at = 0;
    slab.retired = false;
    this.free.push(slab);
  }
}

/** One socket's current slab. */
export class SlabReader {
  private slab: Slab | undefined;

  constructor(private readonly pool: SlabPool) {}

  /** Memory for the next read (the rest of the current slab, or a fresh one). */
  next(): Buffer {
    let slab = this.slab;
    if (!slab || slab.buf.length - slab.at < MIN_READ) {
      if (slab) this.retire(slab);
      slab = this.slab = this.pool.take();
    }
    return slab.buf.subarray(slab.at);
  }

  /** `n` bytes were read into the buffer last given by next(). */
  advance(n: number): void {
    this.slab!.at += n;
  }

  /** Records a view of the current slab handed on to a consumer (release() gives it back). */
  lend(view: Buffer): void {
    if (this.slab && view.buffer === this.slab.buf.buffer) this.pool.lend(this.slab, view);
  }

  /** The socket is gone: its slab is reused once the views lent from it are back. */
  close(): void {
    if (this.slab) this.retire(this.slab);
    this.slab = undefined;
  }

  private retire(slab: Slab): void {
    slab.retired = true;
    if (slab.lent === 0) this.pool.recycle(slab);
  }
}
