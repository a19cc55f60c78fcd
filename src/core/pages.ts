import { FanoutError } from './errors.js';

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

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  ki: 1024, kib: 1024, mi: MiB, mib: MiB, gi: 1024 * MiB, gib: 1024 * MiB, ti: 1024 ** 4, tib: 1024 ** 4,
};

/** Parses "4MiB", "10GB", "350MB/s", "1048576" into bytes (or bytes per second). */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text) || text < 0) throw new FanoutError('INVALID_ARGUMENT', `invalid size ${text}`);
    return checkedBytes(Math.floor(text), String(text));
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*(?:\/s)?\s*$/i.exec(text);
  const unit = match ? SIZE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new FanoutError('INVALID_ARGUMENT', `invalid size "${text}" (examples: 4MiB, 10GB, 350MB/s)`);
  }
  return checkedBytes(Math.floor(Number(match[1]) * unit), `"${text}"`);
}

/** A byte count beyond 2^53 is not exact (and a long enough string of digits is Infinity: a rate of Infinity admitted nothing). */
function checkedBytes(bytes: number, shown: string): number {
  if (!Number.isSafeInteger(bytes)) throw new FanoutError('INVALID_ARGUMENT', `size ${shown} is too large (at most ${Number.MAX_SAFE_INTEGER} bytes)`);
  return bytes;
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
