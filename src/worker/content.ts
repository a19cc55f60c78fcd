import { createHash } from 'node:crypto';
import { FanoutError } from '../core/errors.js';
import type { PageRef } from '../core/types.js';

/** The optional `h` query parameter of a page request: the page's SHA-256 (content addressing). */
export function contentHashParam(query: URLSearchParams): string | undefined {
  const hash = query.get('h');
  if (hash === null) return undefined;
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new FanoutError('INVALID_ARGUMENT', 'query parameter "h" must be a SHA-256 in lowercase hex');
  return hash;
}

/**
 * A page filled from the source under a content key is stored only if its bytes really have
 * that hash: otherwise one bad request (or a source changed in place) would poison the page
 * for every file and version that shares it.
 */
export function contentMatches(ref: PageRef, data: Buffer): boolean {
  return ref.hash === undefined || createHash('sha256').update(data).digest('hex') === ref.hash;
}
