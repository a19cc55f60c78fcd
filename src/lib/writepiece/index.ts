/**
 * The most bytes one write(2) into a file carries: bigger writes are split into pieces this size.
 *
 * Linux 6.x gives a buffered write page-cache folios as large as the write allows (up to 2 MiB on
 * ext4 and xfs), and a 2 MiB folio is an order-9 block of free memory — on a VM that hands free
 * memory back to its host (virtio free page reporting, which reports blocks of that order), memory
 * the host must fault back in as the copy touches it. Measured on this project's VMs, writing a new
 * 512 MiB file on ext4: 1.07–1.15 s of CPU in 4 MiB writes, 0.14–0.19 s in 1 MiB writes (smaller
 * folios come from free memory the guest still backs); on tmpfs, no difference. Elsewhere a 1 MiB
 * write costs what a 4 MiB one does (four syscalls per 4 MiB page instead of one).
 * native/common/writepiece.h holds the same number for the addons' writes.
 */
export const WRITE_PIECE = 1 << 20;

/** How many bytes the next write of `remaining` bytes carries. */
export function pieceOf(remaining: number): number {
  return remaining < WRITE_PIECE ? remaining : WRITE_PIECE;
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
