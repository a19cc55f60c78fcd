/**
 * Reuses page-sized buffers: allocating 4 MiB buffers per request is slow on these machines
 * and churns the heap. Buffers of other sizes are simply allocated.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly bufferSize: number,
    private readonly maxFree = 16,
  ) {}

  acquire(size = this.bufferSize): Buffer {
    if (size === this.bufferSize) {
      const buffer = this.free.pop();
      if (buffer) return buffer;
      return Buffer.allocUnsafeSlow(this.bufferSize);
    }
    return Buffer.allocUnsafe(size);
  }

  /** Returns a buffer obtained from acquire(); the caller must not touch it afterwards. */
  release(buffer: Buffer): void {
    if (buffer.length === this.bufferSize && buffer.byteOffset === 0 && this.free.length < this.maxFree) {
      this.free.push(buffer);
    }
  }
}
