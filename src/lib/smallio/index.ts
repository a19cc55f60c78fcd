import { availableParallelism, constants } from 'node:os';
import { addonPath, optionalAddon } from '../addons/index.js';

/**
 * Small files in one thread-pool job each (native/smallio): a cold small page's source read, its
 * store write, a warm batch item's read. Through Node's fs each of those is several libuv
 * hand-offs (open, stat, read, close…), each a pool thread woken, a completion and a promise on
 * the event loop: the worker's profile of 2,000 cold 64 KiB pages was mostly that, not bytes.
 * The jobs asked for in one turn of the event loop go to the pool together, spread over
 * WORKS_PER_TURN pool threads: the cold items of a batch answer, then their store writes, cost a
 * wake-up per core instead of one per page (on a 2-core host a wake-up preempted the JS thread).
 * Chosen once, at first use; without the addon (not built, another OS, FANOUT_NO_SMALLIO=1)
 * `smallIo()` is undefined and callers keep their fs path. Linux only: the source check reads
 * /proc/self/fd.
 */
interface SmallIoAddon {
  readInside(path: string, root: string, offset: number, length: number, into: Uint8Array, expSize: number, expMtimeMs: number, out: Float64Array): Promise<number>;
  writeNew(tmp: string, file: string, data: Uint8Array, out: Float64Array): Promise<number>;
  readFile(path: string, into: Uint8Array, length: number, out: Float64Array): Promise<number>;
  /** Whether readInside can hash what it reads (an `out` of 12 doubles asks for it). */
  hasSha256?(): boolean;
  /** Hands the jobs queued since the last flush to the pool, spread over at most `works` pool threads; returns the works queued. */
  flush(works: number): number;
}

/**
 * Pool threads one turn's jobs are spread over: one per core, at most the pool's size. Fewer
 * means fewer wake-ups; more, more reads at once for a slow source (a network file system), where
 * the jobs given to one thread wait for each other. Measured on 2 cores, 2,000 cold 64 KiB pages
 * (bench/small-sync.mjs, median of 3, alternated twice): 8 jobs to a thread 1.18/1.25 s, 32 to a
 * thread 1.01/1.13 s, spread over one thread per core (this) 1.11/1.11 s.
 */
export const WORKS_PER_TURN = Math.max(1, Math.min(Number(process.env.UV_THREADPOOL_SIZE) || 4, availableParallelism()));

export const SMALLIO_ADDON_PATH = addonPath('smallio', 'fanout_smallio');

/** Codes of readInside besides errno values. */
export const INSIDE_CODES = { outside: -1, isDirectory: -2, notAFile: -3, changed: -4, pastEnd: -5 } as const;

/** A file's size and mtime as Node's Stats would give them (mtimeMs = sec × 1e3 + nsec / 1e6). */
export interface SizeMtime {
  size: number;
  mtimeMs: number;
}

export type InsideResult =
  | { code: 0; before: SizeMtime; after: SizeMtime; bytesRead: number; sha256?: string }
  | { code: number; before: SizeMtime | undefined };

export interface SmallIo {
  /**
   * Reads [offset, offset + into.length) of `path` if its real path lies under `realRoot` and it is
   * a regular file of exactly `expected` size and whole-ms mtime (checked on the open fd before a
   * byte is read); `after` is the fd's stat after the last byte (a rewrite in place shows there).
   * With `sha256`, the hex SHA-256 of the bytes read, hashed on the pool thread right after the
   * read, when the addon can (else the result has none and the caller hashes).
   */
  readInside(path: string, realRoot: string, offset: number, into: Buffer, expected: SizeMtime, options?: { sha256?: boolean }): Promise<InsideResult>;
  /** Writes `data` to a new `tmp`, then renames it to `file`; resolves with the file's mtimeMs. Rejects with an errno error (tmp removed). */
  writeNew(tmp: string, file: string, data: Buffer): Promise<number>;
  /** Reads up to into.length bytes of `path` from its start; resolves with the count read. */
  readFile(path: string, into: Buffer): Promise<number>;
}

let chosen: { io: SmallIo | undefined } | undefined;

/** The addon's functions, or undefined where it is not available (see above). */
export function smallIo(): SmallIo | undefined {
  chosen ??= { io: load() };
  return chosen.io;
}

function load(): SmallIo | undefined {
  const addon = optionalAddon<SmallIoAddon>(SMALLIO_ADDON_PATH, process.env.FANOUT_NO_SMALLIO === '1' || process.platform !== 'linux');
  return addon && wrap(addon);
}

const msOf = (sec: number, nsec: number) => sec * 1e3 + nsec / 1e6;

function wrap(addon: SmallIoAddon): SmallIo {
  let flushing = false;
  const canHash = addon.hasSha256?.() === true;
  /** Every call queues its job; the turn's jobs leave together, once the turn's code has run. */
  const queued = <T>(job: Promise<T>): Promise<T> => {
    if (!flushing) {
      flushing = true;
      setImmediate(() => {
        flushing = false;
        addon.flush(WORKS_PER_TURN);
      });
    }
    return job;
  };
  return {
    async readInside(path, realRoot, offset, into, expected, options) {
      const hash = options?.sha256 === true && canHash;
      const out = new Float64Array(hash ? 12 : 7);
      const code = await queued(addon.readInside(path, realRoot, offset, into.length, into, expected.size, Math.floor(expected.mtimeMs), out));
      // out[0..2] are set once the fd was stat-ed; a failure before that leaves zeros.
      const before = out[1] !== 0 || out[2] !== 0 || out[0] !== 0 ? { size: out[0]!, mtimeMs: msOf(out[1]!, out[2]!) } : undefined;
      if (code !== 0) return { code, before };
      const sha256 = hash && out[7] === 1 ? Buffer.from(out.buffer, 8 * 8, 32).toString('hex') : undefined;
      return { code: 0, before: before!, after: { size: out[3]!, mtimeMs: msOf(out[4]!, out[5]!) }, bytesRead: out[6]!, sha256 };
    },
    async writeNew(tmp, file, data) {
      const out = new Float64Array(3);
      const code = await queued(addon.writeNew(tmp, file, data, out));
      if (code !== 0) throw errnoError(code, ['open', 'write', 'fstat', 'close', 'rename'][out[2]! - 1] ?? 'write', tmp);
      return msOf(out[0]!, out[1]!);
    },
    async readFile(path, into) {
      const out = new Float64Array(1);
      const code = await queued(addon.readFile(path, into, into.length, out));
      if (code !== 0) throw errnoError(code, 'read', path);
      return out[0]!;
    },
  };
}

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, value]) => [value, name]));

/** An error shaped like Node's fs errors (`code`, `errno`, `syscall`), so callers' errno checks (ENOENT, ENOSPC) hold. */
export function errnoError(errno: number, syscall: string, path: string): NodeJS.ErrnoException {
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  return Object.assign(new Error(`${code}: ${syscall} failed, '${path}'`), { code, errno: -errno, syscall, path });
}
