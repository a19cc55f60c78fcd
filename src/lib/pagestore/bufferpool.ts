import { slabBuffer } from '../memory/index.js';

/** Smaller buffers are kept by size class, rounded up to this. */
const GRAIN = 16 * 1024;

/**
 * Reuses page-sized buffers: allocating 4 MiB buffers per request is slow on these machines
 * and churns the heap. With `smallBytes`, smaller buffers are reused too (by 16 KiB size class,
 * up to that many idle bytes in all): a cold 64 KiB page had a fresh buffer per fill, whose memory
 * faulted in page by page and whose garbage drove most of the worker's collections in a run of
 * small files. Other sizes are simply allocated.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly small = new Map<number, ArrayBuffer[]>();
  private smallIdle = 0;
  /** The memory of small buffers this pool made: only those are taken back. */
  private readonly made = new WeakSet<ArrayBuffer>();

  constructor(
    readonly bufferSize: number,
    private readonly maxFree = 16,
    private readonly smallBytes = 0,
  ) {}

  acquire(size = this.bufferSize): Buffer {
    if (size === this.bufferSize) {
      const buffer = this.free.pop();
      if (buffer) return buffer;
      return slabBuffer(this.bufferSize); // kept and reused: in huge pages where it can be (lib/memory)
    }
    if (this.smallBytes > 0 && size > 0 && size < this.bufferSize) {
      const grain = Math.ceil(size / GRAIN) * GRAIN;
      const memory = this.small.get(grain)?.pop();
      if (memory) {
        this.smallIdle -= grain;
        return Buffer.from(memory, 0, size);
      }
      const fresh = Buffer.allocUnsafeSlow(grain).buffer as ArrayBuffer;
      this.made.add(fresh);
      return Buffer.from(fresh, 0, size);
    }
    return Buffer.allocUnsafe(size);
  }

  /** Returns a buffer obtained from acquire(); the caller must not touch it afterwards. */
  release(buffer: Buffer): void {
    if (buffer.length === this.bufferSize && buffer.byteOffset === 0 && this.free.length < this.maxFree) {
      this.free.push(buffer);
      return;
    }
    const memory = buffer.buffer as ArrayBuffer;
    if (buffer.byteOffset !== 0 || !this.made.has(memory) || this.smallIdle + memory.byteLength > this.smallBytes) return;
    let list = this.small.get(memory.byteLength);
    if (!list) this.small.set(memory.byteLength, (list = []));
    // Once: a buffer released twice must not be handed out twice.
    if (list.includes(memory)) return;
    list.push(memory);
    this.smallIdle += memory.byteLength;
  }
}
