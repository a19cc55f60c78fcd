import { isFanoutName } from '../../core/paths.js';
import type { DirEntry, FileInfo } from '../../core/types.js';
import { arrayOf, checkedAnswer, fail, isByteCount, isNonEmptyString, isNumber, isObject, isString, optional } from './check.js';

/*
 * The checks of stat and list answers on the SDK's side. A worker's word is not trusted as is: a
 * size of -5 made `fanout cp` write an empty file and exit 0, and a listing naming "../x" made a
 * tree copy write outside its target.
 */

/** A stat answer (GET /v1/stat/…) as FileInfo, or WORKER_UNAVAILABLE naming `what` and the field. */
export function checkFileInfo(body: unknown, what: string): FileInfo {
  return checkedAnswer(what, () => {
    const b = isObject(body, '');
    isString(b.path, 'path');
    isByteCount(b.size, 'size');
    isNumber(b.mtimeMs, 'mtimeMs');
    isNonEmptyString(b.version, 'version');
    return { path: b.path as string, size: b.size as number, mtimeMs: b.mtimeMs as number, version: b.version as string };
  });
}

/**
 * A listing (GET /v1/list/…): its entries, each named by one path segment. A name no file system
 * lists ("", ".", "..", one with "/") fails the answer; names a fanout path cannot hold (control
 * characters, backslashes: core/paths.ts) are left out, as workers since 2026-12 leave them out.
 */
export function checkListing(body: unknown, what: string): DirEntry[] {
  return checkedAnswer(what, () => arrayOf(isObject(body, '').entries, 'entries', entry).filter((e) => isFanoutName(e.name)));
}


function entry(value: unknown, at: string): DirEntry {
  const e = isObject(value, at);
  isSegment(e.name, `${at}.name`);
  if (e.type !== 'file' && e.type !== 'dir') fail(`${at}.type`, 'expected "file" or "dir"');
  optional(isByteCount)(e.size, `${at}.size`);
  optional(isNumber)(e.mtimeMs, `${at}.mtimeMs`);
  optional(isNonEmptyString)(e.version, `${at}.version`);
  const out: DirEntry = { name: e.name as string, type: e.type as 'file' | 'dir' };
  if (e.size !== undefined) out.size = e.size as number;
  if (e.mtimeMs !== undefined) out.mtimeMs = e.mtimeMs as number;
  if (e.version !== undefined) out.version = e.version as string;
  return out;
}

/** One path segment: not empty, ".", ".." and without "/". */
function isSegment(v: unknown, at: string): void {
  isString(v, at);
  const name = v as string;
  if (name === '' || name === '.' || name === '..' || name.includes('/')) fail(at, `${JSON.stringify(name.slice(0, 100))} is not a file name`);
}
