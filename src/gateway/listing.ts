import { FanoutError } from '../core/errors.js';
import type { DirEntry } from '../core/types.js';
import { EMPTY_ETAG } from './dirmarkers.js';
import { s3Errors } from './errors.js';
import { MAX_KEY_BYTES } from './objects.js';
import type { ListedObject } from './xml.js';

/**
 * S3's flat, sorted keyspace over fanout's one-level directory listings. A bucket's keys are
 * the paths of every file under its mount. A depth-first walk that visits each directory's
 * entries in key order (a directory sorts as "name/", so "a.txt" < "a/x" as in S3) yields keys
 * already sorted; it starts at the deepest directory the prefix names, skips subtrees that lie
 * before the resume position or outside the prefix, rolls directories past the prefix into
 * CommonPrefixes without entering them when a delimiter allows it, and stops as soon as it has
 * max-keys entries plus one (to know whether the listing is truncated). Directories appear as
 * common prefixes even when empty (they are what a filesystem source has instead of keys), and
 * an empty directory the walk enters is listed as its marker key "dir/" (see dirmarkers.ts).
 */

/** Where a listing resumes: after `after`, and past every key that starts with it when `subtree`. */
export interface Position {
  after: string;
  subtree: boolean;
}

export interface ListRequest {
  prefix: string;
  /** "" = no delimiter: the whole keyspace under the prefix. */
  delimiter: string;
  maxKeys: number;
  resume?: Position;
  /** The Last-Modified of an empty directory's marker when the source gives directories no time (S3 prefixes): the listing's. */
  now?: number;
}

export interface ListResult {
  objects: ListedObject[];
  commonPrefixes: string[];
  truncated: boolean;
  /** Where the next page starts (when truncated). */
  next?: Position;
  /** The last key or common prefix of this page (S3 ListObjects v1 NextMarker). */
  lastItem?: string;
}

/** Lists one directory of the bucket ("" = its root), sorted or not. */
export type ListDir = (dir: string) => Promise<DirEntry[]>;

/** Directory listings one request may cost; past it the page ends early, truncated. */
export const DEFAULT_LIST_BUDGET = 2000;

type WalkEvent = { kind: 'object'; key: string; entry: DirEntry } | { kind: 'prefix'; prefix: string } | { kind: 'done'; dir: string };

class BudgetExceeded extends Error {}

/** UTF-8 byte order (S3's key order): code unit order, except that surrogate pairs sort last. */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    if (xs !== ys) return xs ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

export async function listKeys(listDir: ListDir, req: ListRequest, budget = DEFAULT_LIST_BUDGET): Promise<ListResult> {
  const { prefix, delimiter, resume } = req;
  const result: ListResult = { objects: [], commonPrefixes: [], truncated: false };
  if (req.maxKeys <= 0) return result;
  let listings = 0;
  let position: Position | undefined;

  /** The common prefix a key (or every key under a directory) rolls up into, if any. */
  const rollup = (name: string): string | undefined => {
    if (!delimiter || name.length <= prefix.length) return undefined;
    const at = name.indexOf(delimiter, prefix.length);
    return at === -1 ? undefined : name.slice(0, at + delimiter.length);
  };
  const pastResume = (name: string, isDir: boolean): boolean => {
    if (!resume) return true;
    if (resume.subtree && name.startsWith(resume.after)) return false;
    if (isDir && resume.after.startsWith(name)) return true; // the resume point is inside: enter it
    return compareKeys(name, resume.after) > 0;
  };

  async function* walk(dir: string, base: string, self?: DirEntry): AsyncGenerator<WalkEvent> {
    if (++listings > budget) throw new BudgetExceeded();
    let entries: DirEntry[];
    try {
      entries = await listDir(dir);
    } catch (err) {
      // Gone since its parent was listed, or the prefix names a file: no keys there.
      if (err instanceof FanoutError && ['NOT_FOUND', 'NOT_A_DIRECTORY', 'INVALID_PATH'].includes(err.code)) return;
      throw err;
    }
    // No key below says an empty directory exists: its marker does (not the bucket's root).
    if (entries.length === 0 && base !== '' && base.startsWith(prefix) && pastResume(base, false) && rollup(base) === undefined) {
      yield { kind: 'object', key: base, entry: { name: base, type: 'dir', size: 0, mtimeMs: self?.mtimeMs ?? req.now ?? 0, version: EMPTY_ETAG } };
    }
    const named = entries.map((entry) => ({ entry, name: base + entry.name + (entry.type === 'dir' ? '/' : '') }));
    named.sort((a, b) => compareKeys(a.name, b.name));
    for (const { entry, name } of named) {
      const isDir = entry.type === 'dir';
      const inPrefix = name.startsWith(prefix) || (isDir && prefix.startsWith(name));
      if (!inPrefix || !pastResume(name, isDir)) continue;
      const common = rollup(name);
      if (common !== undefined) yield { kind: 'prefix', prefix: common };
      else if (!isDir) yield { kind: 'object', key: name, entry };
      // A directory whose key is S3's longest already holds no key S3 could name: not entered.
      // That bounds the walk in a source whose directories loop in a way it cannot tell.
      else if (Buffer.byteLength(name) < MAX_KEY_BYTES) {
        yield* walk(dir ? `${dir}/${entry.name}` : entry.name, name, entry);
        yield { kind: 'done', dir: name };
      }
    }
  }

  // Start in the deepest directory the prefix names: "models/v1/x" → list "models/v1".
  const slash = prefix.lastIndexOf('/');
  const startDir = slash === -1 ? '' : prefix.slice(0, slash);
  if (startDir.split('/').some((s) => s === '.' || s === '..') || startDir.startsWith('/') || startDir.includes('//')) return result;
  let lastPrefix: string | undefined;
  let count = 0;
  try {
    for await (const ev of walk(startDir, startDir ? startDir + '/' : '')) {
      if (ev.kind === 'done') {
        position = { after: ev.dir, subtree: true };
        continue;
      }
      if (ev.kind === 'prefix' && ev.prefix === lastPrefix) continue;
      if (count === req.maxKeys) {
        result.truncated = true;
        break;
      }
      count++;
      if (ev.kind === 'prefix') {
        lastPrefix = ev.prefix;
        result.commonPrefixes.push(ev.prefix);
        position = { after: ev.prefix, subtree: true };
        result.lastItem = ev.prefix;
      } else {
        const { entry, key } = ev;
        result.objects.push({ key, size: entry.size ?? 0, mtimeMs: entry.mtimeMs ?? 0, etag: entry.version ?? '' });
        position = { after: key, subtree: false };
        result.lastItem = key;
      }
    }
  } catch (err) {
    if (!(err instanceof BudgetExceeded)) throw err;
    if (!position) throw s3Errors.internal(`listing needs more than ${budget} directory reads before its first key; use a longer prefix or a delimiter`);
    result.truncated = true;
  }
  if (result.truncated) result.next = position;
  return result;
}

/** Continuation tokens are opaque to clients: base64url of the resume position. */
export function encodeToken(position: Position): string {
  return Buffer.from((position.subtree ? 's' : 'k') + position.after, 'utf8').toString('base64url');
}

export function decodeToken(token: string): Position {
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, 'base64url').toString('utf8') : '';
  if (text.length < 2 || (text[0] !== 's' && text[0] !== 'k') || text.includes('\ufffd')) {
    throw s3Errors.invalidArgument('The continuation token provided is incorrect', 'continuation-token', token.slice(0, 200));
  }
  return { after: text.slice(1), subtree: text[0] === 's' };
}

/**
 * ListObjects v1 resumes from a plain key (marker). A marker that is one of this listing's
 * common prefixes (as NextMarker is when a delimiter is used) skips that whole prefix.
 */
export function markerPosition(marker: string, prefix: string, delimiter: string): Position | undefined {
  if (!marker) return undefined;
  const rolled = delimiter !== '' && marker.startsWith(prefix) && marker.endsWith(delimiter) && marker.indexOf(delimiter, prefix.length) === marker.length - delimiter.length;
  return { after: marker, subtree: rolled };
}

/** A v1 NextMarker for a position: a plain key clients can send back. */
export function positionMarker(position: Position, delimiter: string): string {
  // A directory finished without a delimiter: resume past every key under it.
  return position.subtree && !(delimiter && position.after.endsWith(delimiter)) ? position.after + '\u{10FFFF}' : position.after;
}
