import { constants as os } from 'node:os';
import { FanoutError, descriptorShortage } from '../core/errors.js';

const { errno } = os;

/**
 * The errno a failed request answers: what a missing path or a dead cluster means to POSIX.
 * The mount process (or the host) out of file descriptors is EMFILE (ENFILE), "Too many open
 * files": the cause named as open(2) names it, which a reader can act on, and not an I/O error
 * of the file. Before, it was EIO, as for a dead cluster.
 */
export function errnoFor(err: unknown): number {
  const shortage = descriptorShortage(err);
  if (shortage) return errno[shortage];
  switch (err instanceof FanoutError ? err.code : undefined) {
    case 'NOT_FOUND':
    case 'UNKNOWN_MOUNT':
    case 'INVALID_PATH':
      return errno.ENOENT;
    case 'IS_A_DIRECTORY':
      return errno.EISDIR;
    case 'NOT_A_DIRECTORY':
      return errno.ENOTDIR;
    default:
      return errno.EIO;
  }
}
