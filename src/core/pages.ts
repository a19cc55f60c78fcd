import { createHash } from 'node:crypto';
import { FanoutError } from './errors.js';
import type { PageRef } from './types.js';

export const MiB = 1024 * 1024;
export const DEFAULT_PAGE_SIZE = 4 * MiB;
export const MIN_PAGE_SIZE = 1 * MiB;
export const MAX_PAGE_SIZE = 64 * MiB;

export function pageCount(fileSize: number, pageSize: number): number {
  return fileSize === 0 ? 0 : Math.ceil(fileSize / pageSize);
}

/** Byte span [start, end) of page `index` in a file of `fileSize` bytes. */
export function pageSpan(index: number, fileSize: number, pageSize: number): { start: number; end: number } {
  const start = index * pageSize;
  if (!Number.isInteger(index) || index < 0 || start >= fileSize) {
    throw new FanoutError('RANGE_NOT_SATISFIABLE', `page ${index} is outside a file of ${fileSize} bytes`);
  }
  return { start, end: Math.min(fileSize, start + pageSize) };
}

/** The pages that cover the byte range [start, end) (end exclusive), in order. */
export function pagesForRange(start: number, end: number, pageSize: number): { first: number; last: number } {
  if (end <= start) return { first: 0, last: -1 };
  return { first: Math.floor(start / pageSize), last: Math.floor((end - 1) / pageSize) };
}

/** The part of page `index` that the byte range [start, end) covers, as offsets within the page. */
export function pageSlice(index: number, start: number, end: number, pageSize: number): { from: number; to: number } {
  const pageStart = index * pageSize;
  return { from: Math.max(start, pageStart) - pageStart, to: Math.min(end, pageStart + pageSize) - pageStart };
}

/**
 * The page key names one page of one version of one file. Every client and worker computes
 * the same key, so it is also the placement key on the ring and the file name in the store.
 */
export function pageKey(ref: PageRef, pageSize: number): string {
  if (ref.hash !== undefined) return contentKey(ref.hash);
  return createHash('sha256')
    .update(`${ref.mount}\0${ref.path}\0${ref.version}\0${ref.size}\0${pageSize}\0${ref.index}`)
    .digest('hex')
    .slice(0, 40);
}

/** The key of a page known by its SHA-256: the hash itself (64 hex digits, never a path key's 40). */
export function contentKey(sha256: string): string {
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new FanoutError('INVALID_ARGUMENT', `page content hash must be 64 lowercase hex digits`);
  return sha256;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  ki: 1024, kib: 1024, mi: MiB, mib: MiB, gi: 1024 * MiB, gib: 1024 * MiB, ti: 1024 ** 4, tib: 1024 ** 4,
};

/** Parses "4MiB", "10GB", "350MB/s", "1048576" into bytes (or bytes per second). */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text) || text < 0) throw new FanoutError('INVALID_ARGUMENT', `invalid size ${text}`);
    return Math.floor(text);
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*(?:\/s)?\s*$/i.exec(text);
  const unit = match ? SIZE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new FanoutError('INVALID_ARGUMENT', `invalid size "${text}" (examples: 4MiB, 10GB, 350MB/s)`);
  }
  return Math.floor(Number(match[1]) * unit);
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}
