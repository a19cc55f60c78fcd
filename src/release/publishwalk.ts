import { FanoutError } from '../core/errors.js';
import { isFanoutName } from '../core/paths.js';
import type { FileInfo } from '../core/types.js';
import type { SkipReason, Ufs } from '../lib/ufs/index.js';
import { Semaphore } from '../lib/transfer/index.js';
import { RESERVED_PREFIX } from './manifest.js';

/** Directories listed at once: a directory source stats its entries 32 at a time within each. */
const LIST_CONCURRENCY = 8;
/** Entries an UNPUBLISHABLE_ENTRIES message names; the rest are counted. */
const NAMED_ENTRIES = 10;
/** NAME_MAX of Linux's file systems: a longer name (an S3 key's segment) cannot be installed. */
const MAX_NAME_BYTES = 255;

/** Why an entry of the tree cannot be in a release: the source's reasons, and a name no host can take. */
export type Unpublishable = { path: string; reason: SkipReason | 'unservable-name' };

const REASONS: Record<Unpublishable['reason'], string> = {
  'not-utf8': 'name is not UTF-8',
  'dangling-link': 'symlink to nothing',
  'link-outside': 'symlink out of the source',
  'special-file': 'not a file or directory: FIFO, socket or device',
  'unservable-name': 'name with a control character or backslash, or over 255 bytes',
};

/**
 * Every file below `dir`, depth first, in code-point order (the reserved prefix skipped), and
 * every entry that the listing left out or that a manifest cannot name. Directories are listed
 * LIST_CONCURRENCY at a time, each subtree's files kept in its place, so the order is the one a
 * walk of one directory after the other gives.
 */
export async function walkTree(ufs: Ufs, dir: string, signal?: AbortSignal): Promise<{ files: FileInfo[]; unpublishable: Unpublishable[] }> {
  const unpublishable: Unpublishable[] = [];
  const slots = new Semaphore(LIST_CONCURRENCY);
  const limited = async <T>(call: () => Promise<T>): Promise<T> => {
    const release = await slots.acquire(signal);
    try {
      return await call();
    } finally {
      release();
    }
  };
  const visit = async (current: string): Promise<FileInfo[]> => {
    const under = (name: string) => (current ? `${current}/${name}` : name);
    const entries = await limited(() => ufs.list(current, signal, { onSkipped: (e) => unpublishable.push({ path: under(e.name), reason: e.reason }) }));
    // A promise only for what waits (a directory, a file the listing gave no version): a tree is
    // mostly files.
    const parts = entries.map((entry): FileInfo[] | Promise<FileInfo[]> => {
      const path = under(entry.name);
      if (path === RESERVED_PREFIX) return [];
      if (!isFanoutName(entry.name) || Buffer.byteLength(entry.name) > MAX_NAME_BYTES) {
        unpublishable.push({ path, reason: 'unservable-name' });
        return [];
      }
      if (entry.type === 'dir') return visit(path);
      if (entry.size !== undefined && entry.version !== undefined) return [{ path, size: entry.size, mtimeMs: entry.mtimeMs ?? 0, version: entry.version }];
      return limited(() => ufs.stat(path, signal)).then((info) => [info]);
    });
    return (await Promise.all(parts)).flat();
  };
  const files = await visit(dir);
  return { files, unpublishable: unpublishable.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)) };
}

/** UNPUBLISHABLE_ENTRIES naming the first entries (`mountPath`: how paths are shown, /MOUNT). */
export function unpublishableError(mountPath: string, prefix: string, entries: Unpublishable[]): FanoutError {
  const named = entries.slice(0, NAMED_ENTRIES).map((e) => `${mountPath}/${e.path} (${REASONS[e.reason]})`);
  const more = entries.length > NAMED_ENTRIES ? `, and ${entries.length - NAMED_ENTRIES} more` : '';
  return new FanoutError(
    'UNPUBLISHABLE_ENTRIES',
    `${mountPath}/${prefix ? `${prefix}/` : ''} holds ${entries.length} ${entries.length === 1 ? 'entry' : 'entries'} a release cannot carry ` +
      `(every host would install the release without ${entries.length === 1 ? 'it' : 'them'}): ${named.join('; ')}${more}. ` +
      'Rename or remove them (a link: point it at a file inside the source), or publish a sub-directory without them; nothing was published',
  );
}
