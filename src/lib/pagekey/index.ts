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
  const input = `${ref.mount}\0${ref.path}\0${ref.version}\0${ref.size}\0${pageSize}\0${ref.index}`;
  let key = recentKeys.get(input);
  if (key === undefined) {
    key = sha256(input).toString('hex', 0, 20);
    if (recentKeys.size >= RECENT_KEYS) recentKeys.delete(recentKeys.keys().next().value!);
    recentKeys.set(input, key);
  }
  return key;
}

/**
 * Keys computed lately, by what was hashed (oldest dropped first): a worker needs a requested
 * page's key in its checks and again to serve it, a hot page's on every request; the digest (a
 * call into the addon, a buffer, a hex string) cost ≈ 10 µs of a hit's JS each time.
 */
const recentKeys = new Map<string, string>();
const RECENT_KEYS = 1024;

/** The key of a page known by its SHA-256: the hash itself (64 hex digits, never a path key's 40). */
export function contentKey(hash: string): string {
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new FanoutError('INVALID_ARGUMENT', `page content hash must be 64 lowercase hex digits`);
  return hash;
}
