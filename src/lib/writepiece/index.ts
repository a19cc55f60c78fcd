/**
 * The most bytes one write(2) into a file carries: bigger writes are split into pieces this size.
 *
 * Linux 6.x gives a buffered write page-cache folios as large as the write allows (up to 2 MiB;
 * measured on ext4). On this project's VMs (free page reporting of order-9 blocks, i.e. 2 MiB) a new
 * 2 MiB folio is far dearer to fill than smaller ones: writing a new 512 MiB file on ext4 took
 * 0.4–1.2 s of CPU in 4 MiB writes against 0.14–0.19 s in 1 MiB writes, the cost inside the copy
 * into the new folios (docs/benchmarks.md); 1 MiB writes stayed cheap even once they had to
 * split 2 MiB free blocks. On tmpfs (order-0 pages) no difference. Elsewhere a 1 MiB write costs
 * what a 4 MiB one does, plus three syscalls per 4 MiB page. native/common/writepiece.h holds
 * the same number for the addons' writes.
 */
export const WRITE_PIECE = 1 << 20;

/** How many bytes the next write of `remaining` bytes carries. */
export function pieceOf(remaining: number): number {
  return remaining < WRITE_PIECE ? remaining : WRITE_PIECE;
}

/** Where writeFully writes: a file handle (fs/promises FileHandle fits). */
export interface PositionalWriter {
  write(data: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
}

/**
 * All of `data` at `position`, in pieces, continuing after short writes; a write that makes no
 * progress fails with EIO (a page file's writes: the spool's appends, a stored page by JS).
 */
export async function writeFully(handle: PositionalWriter, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, pieceOf(data.length - done), position + done);
    if (bytesWritten === 0) throw Object.assign(new Error('page write made no progress'), { code: 'EIO' });
    done += bytesWritten;
  }
}

/** The leading chunks of `chunks` holding at most WRITE_PIECE bytes (views, no copy; never empty if `chunks` has bytes). */
export function leadingPiece(chunks: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let room = WRITE_PIECE;
  for (const chunk of chunks) {
    if (room === 0) break;
    if (chunk.length <= room) {
      out.push(chunk);
      room -= chunk.length;
    } else {
      out.push(chunk.subarray(0, room));
      room = 0;
    }
  }
  return out;
}
