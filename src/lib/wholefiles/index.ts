import { close, fdatasync, open, rename, unlink, writev, constants as fsc } from 'node:fs';
import { addonPath, optionalAddon } from '../addons/index.js';
import { getSystemErrorName } from 'node:util';
import { skipBytes } from '../transfer/positional.js';
import { leadingPiece } from '../writepiece/index.js';

/**
 * Whole small files written many at a time (sync staging, `fanout cp` of a tree). A small file
 * written by fs/promises costs four hand-offs to libuv's thread pool (open, writev, close,
 * rename) and a FileHandle; on a 2-core host each hand-off wakes a pool thread that preempts the
 * JS thread, and that, not bytes, bounded thousands of 64 KiB files. With the addon
 * (native/files) the files queued in one turn of the event loop are written by ONE pool job;
 * without it (not built, or FANOUT_NO_NATIVE_FILES=1) by fs callbacks on raw descriptors. The
 * path is chosen once, at first use. Both give the same files and the same per-file errors
 * (Node-style errors: code, errno, syscall, path).
 */
export type WholeFilePath = 'native' | 'js';

export interface WholeFile {
  /** The final name. */
  path: string;
  /** Written under this name first and renamed onto `path` once complete; none: written in place. */
  tmp?: string;
  /** The file's bytes, in order. Not to be changed until the write settles. */
  chunks: Buffer[];
}

export interface WholeFileWriterOptions {
  /** O_EXCL: a file already at the written name fails with EEXIST (default: truncated). */
  exclusive?: boolean;
  /** fdatasync each file before it is closed and renamed (default false: the caller flushes in bulk). */
  datasync?: boolean;
  /** Mode of created files, before the umask (default 0o666, as fs.open). */
  mode?: number;
  /** Files per pool job (default 64). */
  maxFiles?: number;
  /** Bytes per pool job (default 8 MiB): a job's files are handed on together. */
  maxBytes?: number;
  /** Pool jobs at once (default 2: a 2-core host, and the pool has other work). */
  jobs?: number;
  /** Force a path (tests); default: native when the addon loads. */
  path?: WholeFilePath;
}

interface FilesAddon {
  writeFiles(paths: string[], temps: (string | null)[], chunks: Buffer[][], mode: number, flags: number, callback: (results: Int32Array) => void): void;
  syncFs(path: string, callback: (errno: number) => void): void;
}

export const FILES_ADDON_PATH = addonPath('files', 'fanout_files');

/** Steps as the addon numbers them, named as Node's fs errors name their syscall. */
const STEPS = ['', 'open', 'write', 'fdatasync', 'close', 'rename'] as const;
const FLAG_EXCLUSIVE = 1;
const FLAG_DATASYNC = 2;

let addon: FilesAddon | null | undefined;

function loadAddon(): FilesAddon | null {
  if (addon !== undefined) return addon;
  return (addon = optionalAddon<FilesAddon>(FILES_ADDON_PATH, process.env.FANOUT_NO_NATIVE_FILES === '1' || process.platform !== 'linux') ?? null);
}

/** How this process writes whole small files. */
export function wholeFilePath(): WholeFilePath {
  return loadAddon() ? 'native' : 'js';
}

/**
 * syncfs(2) of the file system holding `path` on a pool thread, when the addon is built:
 * resolves true once flushed, false without the addon (the caller flushes another way); rejects
 * with a Node-style error when the flush failed (a write-back error: the data is not safe).
 */
export function syncFileSystem(path: string): Promise<boolean> {
  const native = loadAddon();
  if (!native) return Promise.resolve(false);
  return new Promise<boolean>((resolve, reject) => {
    native.syncFs(path, (errno) => (errno === 0 ? resolve(true) : reject(fsError(errno, 'syncfs', path))));
  });
}

interface Pending {
  file: WholeFile;
  bytes: number;
  resolve(): void;
  reject(err: Error): void;
}

/** A Node-style fs error (what fs/promises would have thrown for the same step). */
export function fsError(errno: number, syscall: string, path: string): NodeJS.ErrnoException {
  let code: string;
  try {
    code = getSystemErrorName(-errno);
  } catch {
    code = 'UNKNOWN';
  }
  const err: NodeJS.ErrnoException = new Error(`${code}: ${syscall} '${path}'`);
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  err.path = path;
  return err;
}

export class WholeFileWriter {
  readonly path: WholeFilePath;
  private readonly queue: Pending[] = [];
  private queuedBytes = 0;
  private running = 0;
  private scheduled = false;
  private readonly flags: number;
  private readonly mode: number;
  private readonly maxFiles: number;
  private readonly maxBytes: number;
  private readonly jobs: number;
  private readonly native: FilesAddon | null;
  private readonly counts = { jobs: 0, files: 0 };

  constructor(private readonly options: WholeFileWriterOptions = {}) {
    this.native = options.path === 'js' ? null : loadAddon();
    if (options.path === 'native' && !this.native) throw new Error(`the files addon is not built (${FILES_ADDON_PATH})`);
    this.path = this.native ? 'native' : 'js';
    this.flags = (options.exclusive ? FLAG_EXCLUSIVE : 0) | (options.datasync ? FLAG_DATASYNC : 0);
    this.mode = options.mode ?? 0o666;
    this.maxFiles = Math.max(1, options.maxFiles ?? 64);
    this.maxBytes = Math.max(1, options.maxBytes ?? 8 * 1024 * 1024);
    this.jobs = Math.max(1, options.jobs ?? 2);
  }

  /** Pool jobs run and files they carried (tests; a job per file would mean no batching). */
  stats(): { jobs: number; files: number } {
    return { ...this.counts };
  }

  /** Writes a whole file; settles once it is under its final name (or failed, its temporary name removed). */
  write(file: WholeFile): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let bytes = 0;
      for (const chunk of file.chunks) bytes += chunk.length;
      this.queue.push({ file, bytes, resolve, reject });
      this.queuedBytes += bytes;
      this.pump();
    });
  }

  /**
   * Files queued wait one turn of the event loop for company (the other files whose last page
   * arrives in the same turn), unless a job is full already.
   */
  private pump(): void {
    if (this.queue.length >= this.maxFiles || this.queuedBytes >= this.maxBytes) return this.flush();
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.queue.length > 0 && this.running < this.jobs) {
      const job: Pending[] = [];
      let bytes = 0;
      while (this.queue.length > 0 && job.length < this.maxFiles && (job.length === 0 || bytes + this.queue[0]!.bytes <= this.maxBytes)) {
        const next = this.queue.shift()!;
        bytes += next.bytes;
        job.push(next);
      }
      this.queuedBytes -= bytes;
      this.running++;
      this.counts.jobs++;
      this.counts.files += job.length;
      const done = () => {
        this.running--;
        // What queued while this job ran leaves at once: it has waited already.
        if (this.queue.length > 0) this.flush();
      };
      if (this.native) this.runNative(this.native, job, done);
      else void this.runJs(job).finally(done);
    }
  }

  private runNative(native: FilesAddon, job: Pending[], done: () => void): void {
    const settle = (results: Int32Array) => {
      job.forEach((p, i) => {
        const errno = results[2 * i]!;
        if (errno === 0) return p.resolve();
        const step = STEPS[results[2 * i + 1]!] || 'write';
        // Every step but the rename acts on the name written first.
        p.reject(fsError(errno, step, step === 'rename' ? p.file.path : (p.file.tmp ?? p.file.path)));
      });
      done();
    };
    try {
      native.writeFiles(
        job.map((p) => p.file.path),
        job.map((p) => p.file.tmp ?? null),
        job.map((p) => p.file.chunks),
        this.mode,
        this.flags,
        settle,
      );
    } catch (err) {
      // Arguments the addon refused (never for well-formed files): fail the job, not the process.
      for (const p of job) p.reject(err as Error);
      done();
    }
  }

  /** The JS path: each file by fs callbacks on a raw descriptor (no FileHandle), files in parallel. */
  private async runJs(job: Pending[]): Promise<void> {
    await Promise.all(
      job.map((p) =>
        writeOneJs(p.file, this.flags, this.mode).then(
          () => p.resolve(),
          (err: Error) => p.reject(err),
        ),
      ),
    );
  }
}

const call = <T>(fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> =>
  new Promise<T>((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));

async function writeOneJs(file: WholeFile, flags: number, mode: number): Promise<void> {
  const name = file.tmp ?? file.path;
  const openFlags = fsc.O_WRONLY | fsc.O_CREAT | ((flags & FLAG_EXCLUSIVE) !== 0 ? fsc.O_EXCL : fsc.O_TRUNC);
  const fd = await call<number>((cb) => open(name, openFlags, mode, cb));
  let failure: unknown;
  try {
    let rest = file.chunks.filter((c) => c.length > 0);
    while (rest.length > 0) {
      const written = await call<number>((cb) => writev(fd, leadingPiece(rest), cb));
      if (written <= 0) throw fsError(5 /* EIO */, 'write', name);
      rest = skipBytes(rest, written);
    }
    if ((flags & FLAG_DATASYNC) !== 0) await call<void>((cb) => fdatasync(fd, cb));
  } catch (err) {
    failure = err;
  }
  try {
    await call<void>((cb) => close(fd, cb));
  } catch (err) {
    failure ??= err;
  }
  if (!failure && file.tmp) await call<void>((cb) => rename(file.tmp!, file.path, cb)).catch((err: unknown) => (failure = err));
  if (failure) {
    if (file.tmp) await call<void>((cb) => unlink(file.tmp!, cb)).catch(() => {});
    throw failure;
  }
}
