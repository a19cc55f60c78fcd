/** Sizes are rounded up to this: items of similar sizes share buffers. */
const GRAIN = 16 * 1024;

/**
 * Reused buffers for warm batch items: each holds an item's frame head and its page, read from
 * the store right after the head, and is written to the socket as it is (no copy into response
 * slices, one write per item). A fresh 64 KiB buffer per item faulted its memory in page by page
 * (fresh memory is ~4× slower to fill than reused memory on these machines), so buffers go back
 * here once the socket is done with them. At most `maxFreeBytes` are kept idle.
 */
export class ItemBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private freeBytes = 0;

  constructor(private readonly maxFreeBytes: number) {}

  /** A buffer of at least `length` bytes (its own memory: nothing else is in it). */
  acquire(length: number): Buffer {
    const size = Math.ceil(length / GRAIN) * GRAIN;
    const buffer = this.free.get(size)?.pop();
    if (buffer) {
      this.freeBytes -= size;
      return buffer;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Takes back a buffer from acquire() that nothing references any more. */
  release(buffer: Buffer): void {
    if (this.freeBytes + buffer.length > this.maxFreeBytes || buffer.length % GRAIN !== 0) return;
    let list = this.free.get(buffer.length);
    if (!list) this.free.set(buffer.length, (list = []));
    list.push(buffer);
    this.freeBytes += buffer.length;
  }
}
