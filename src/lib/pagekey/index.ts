import { FanoutError } from '../../core/errors.js';
import type { PageRef } from '../../core/types.js';
import { sha256 } from '../checksum/index.js';

/**
 * The page key names one page of one version of one file. Every client and worker computes
 * the same key, so it is also the placement key on the ring and the file name in the store.
 * (Here and not in core: the digest comes from native/checksum where it is built, lib/checksum.)
 */
export function pageKey(ref: PageRef, pageSize: number): string {
  if (ref.hash !== undefined) return contentKey(ref.hash);
  return sha256(`${ref.mount}\0${ref.path}\0${ref.version}\0${ref.size}\0${pageSize}\0${ref.index}`).toString('hex', 0, 20);
}

/** The key of a page known by its SHA-256: the hash itself (64 hex digits, never a path key's 40). */
export function contentKey(hash: string): string {
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new FanoutError('INVALID_ARGUMENT', `page content hash must be 64 lowercase hex digits`);
  return hash;
}
