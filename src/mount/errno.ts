import { constants as os } from 'node:os';
import { FanoutError } from '../core/errors.js';

const { errno } = os;

/** The errno a failed request answers: what a missing path or a dead cluster means to POSIX. */
export function errnoFor(err: unknown): number {
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
