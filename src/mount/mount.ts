import { spawn } from 'node:child_process';
import { readdir, readFile, realpath, stat, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { FanoutClient } from '../client/index.js';
import { monotonicClock } from '../core/clock.js';
import { FanoutError, descriptorShortage, outOfDescriptors } from '../core/errors.js';
import { mountFdLimitShortfall, openFileLimit } from '../lib/fdlimit/index.js';
import { BufferReclaimer } from '../lib/memory/reclaim.js';
import { containerCutNote } from '../lib/memory/container.js';
import { FanoutFs, type MountLog } from './fs.js';
import { loadAddon, type FuseAddon, type FuseSession } from './native.js';
import { parseMountOptions, type MountOptionsInput } from './options.js';

/**
 * Largest read asked of the kernel: 4 MiB (1024 pages, asked for in INIT by native/fuse/init.h;
 * libfuse alone stops at 256). The kernel grants at most fs.fuse.max_pages_limit pages (default
 * 256 = 1 MiB). Direct I/O reads go to the mount one request at a time, so a 4 MiB read in one
 * request instead of four saves three round trips; page-cache reads follow the readahead.
 */
const MAX_READ = 4 * 1024 * 1024;
/** st_blksize, the read size cat and cp choose (1 MiB, as before: small-file readers buffer that much). */
const MAX_BLKSIZE = 1024 * 1024;
const MAX_PAGES_LIMIT = '/proc/sys/fs/fuse/max_pages_limit';
const FSTYPE = 'fuse.fanout';

export interface MountLogger extends MountLog {
  info(fields: object, message: string): void;
}

export interface Mounted {
  mountpoint: string;
  fs: FanoutFs;
  client: FanoutClient;
  /** Resolves when the FUSE session has ended, however it was unmounted. */
  closed: Promise<number>;
  /**
   * Detaches the mount (lazily: files still open keep it alive until closed) and waits up to
   * `graceMs` for the session to end.
   */
  unmount(graceMs?: number): Promise<void>;
}

/**
 * Mounts the cluster read-only at `mountpoint`. A stale mount left there by a killed process
 * ("Transport endpoint is not connected") is detached first; a live one is refused.
 */
export async function mountFanout(mountpoint: string, input: MountOptionsInput, log: MountLogger): Promise<Mounted> {
  const options = parseMountOptions(input);
  const addon = loadAddon();
  // The real path: a link to a directory where a fanout mount runs must be refused as that
  // directory is (a fault hunt stacked a second mount on a live one through a link).
  const target = await answering(resolve(mountpoint), realpath(resolve(mountpoint)).catch(() => resolve(mountpoint)));
  await clearStaleMount(target, log);
  const st = await answering(
    target,
    stat(target).catch((err: NodeJS.ErrnoException) => {
      throw new FanoutError('INVALID_ARGUMENT', `mountpoint ${target}: ${err.code === 'ENOENT' ? 'no such directory' : err.message}`);
    }),
  );
  if (!st.isDirectory()) throw new FanoutError('INVALID_ARGUMENT', `mountpoint ${target} is not a directory`);

  // Read now, while a descriptor is free to read it with: a mount started under a limit too low
  // to open /dev/fuse (or its first connection) names it in the error it exits with.
  const limit = openFileLimit();
  // The mount keeps its own pages (pages.ts), not the client's shared page cache.
  const client = new FanoutClient({ endpoint: options.endpoint, ca: options.ca, pageCacheBytes: 0, hedge: options.hedge });
  let session;
  let fs: FanoutFs;
  try {
    const { pageSize, members } = await client.cluster(); // fail here, not on the first read, if the cluster is unreachable
    const fds = mountFdLimitShortfall(limit, options.threads, members.length);
    if (fds) {
      log.warn(
        fds,
        `open-file limit (ulimit -n, LimitNOFILE) is ${fds.limit}, below the ${fds.wanted} this mount's ${options.threads} FUSE threads and connections to ${members.length} worker(s) want: reads that need a new connection when none is left fail with EMFILE ("Too many open files"). Raise the limit, or lower --threads`,
      );
    }
    // An explicit --read-memory past an eighth of the container's limit is cut (mount/fs.ts): said, not silent.
    const cut = options.readMemory === undefined ? undefined : containerCutNote('--read-memory', options.readMemory);
    if (cut) log.warn({ readMemory: options.readMemory }, cut);
    fs = new FanoutFs(addon, client, pageSize, { ttlMs: options.ttl, readahead: options.readahead, cacheBytes: options.cache, readBytes: options.readMemory, directIo: options.directIo, log });
    const flags = ['ro', 'default_permissions', 'fsname=fanout', 'subtype=fanout', `max_read=${MAX_READ}`];
    if (options.allowOther) flags.push('allow_other');
    session = addon.mount(target, {
      args: ['-o', flags.join(',')],
      maxRead: MAX_READ,
      maxReadahead: options.kernelReadahead,
      threads: options.threads,
      cloneFd: true,
      blksize: Math.min(pageSize, MAX_BLKSIZE),
      // Held small files (held.ts) share the memory bound of the pages kept for readers.
      heldBytes: options.cache,
      pageSize,
      maxPages: MAX_READ / 4096,
      directIoMmap: options.directIo,
    }, fs.dispatch);
    fs.attach(session);
  } catch (err) {
    await client.close();
    // Before, a mount under `prlimit --nofile=20` exited "INTERNAL: cannot mount" (libfuse's open of
    // /dev/fuse met EMFILE), the code of a fanout bug, naming no limit.
    throw outOfDescriptors(err, `cannot mount at ${target}`, {
      who: 'this mount process',
      limit,
      then: descriptorShortage(err) === 'ENFILE' ? 'mount again once the host has descriptors free (fs.file-max)' : 'raise it (ulimit -n, or LimitNOFILE in its systemd unit) and mount again',
    }) ?? err;
  }
  await raiseKernelReadahead(target, options.kernelReadahead, log);
  await logReadPath(addon, session, fs, log);

  // Page buffers and socket slabs that readers let go become garbage V8 frees only once more is
  // allocated: an idle mount kept them (found by a fault hunt). The worker's reclaimer collects them.
  const reclaiming = new AbortController();
  void new BufferReclaimer({ clock: monotonicClock }).run(reclaiming.signal);
  let ended = false;
  void fs.closed.then(() => (ended = true));
  let unmounting: Promise<void> | undefined;
  const unmount = (graceMs = 3000): Promise<void> =>
    (unmounting ??= (async () => {
      if (!ended) addon.unmount(session); // not when someone else unmounted it already
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((r) => (timer = setTimeout(r, graceMs)));
      await Promise.race([fs.closed, late]);
      clearTimeout(timer);
      const held = fs.heldStats();
      if (held) log.info({ held }, 'requests answered by the addon from held small files');
      const offered = fs.offeredStats();
      if (offered) log.info({ offered }, 'reads answered by the addon from offered pages');
      reclaiming.abort();
      await client.close();
    })());
  return { mountpoint: target, fs, client, closed: fs.closed, unmount };
}

/**
 * Says once how large a read request the kernel may send and whether large files bypass its page
 * cache. The kernel does not say what it granted: it is the smaller of what INIT asked for and
 * fs.fuse.max_pages_limit at mount time (raising that sysctl is the operator's call:
 * docs/operations.md). After raiseKernelReadahead's stat, so the INIT exchange is done.
 */
async function logReadPath(addon: FuseAddon, session: FuseSession, fs: FanoutFs, log: MountLogger): Promise<void> {
  const init = addon.initInfo?.(session);
  const limit = Number((await readFile(MAX_PAGES_LIMIT, 'utf8').catch(() => '')).trim()) || 256;
  const pages = Math.min(init?.maxPages || 256, limit);
  const readRequestBytes = Math.min(pages * 4096, MAX_READ);
  log.info(
    // The page size it counts in now (fs.pageSize); a change is logged when the mount follows it.
    { readRequestBytes, maxPagesLimit: limit, directIo: fs.directIo(), pageSize: fs.pageSize },
    `reads of up to ${readRequestBytes / 2 ** 20} MiB per request` +
      (readRequestBytes < MAX_READ ? ` (fs.fuse.max_pages_limit = ${limit}; ${MAX_READ / 4096} would allow ${MAX_READ / 2 ** 20} MiB)` : '') +
      (fs.directIo() ? '; files of a page or more bypass the kernel page cache (direct I/O)' : ''),
  );
}

/**
 * A FUSE mount whose process died answers every request with ENOTCONN; it must be detached
 * before the directory can be mounted again. A working fanout mount is left alone (refused).
 * readdir, not stat: the kernel may answer stat from attributes it still caches.
 */
export async function clearStaleMount(target: string, log: MountLogger): Promise<void> {
  const error = await answering(
    target,
    readdir(target).then(
      () => undefined,
      (err: NodeJS.ErrnoException) => err,
    ),
  );
  if (error?.code === 'ENOTCONN' || error?.code === 'ECONNABORTED') {
    log.info({ mountpoint: target }, 'a stale mount is left from a process that died: unmounting it');
    await detach(target);
    return;
  }
  if (!error && (await mountedFilesystems()).some((m) => m.mountpoint === target && m.fstype === FSTYPE)) {
    throw new FanoutError('INVALID_ARGUMENT', `${target} is already mounted by a running fanout mount; unmount it first (fusermount3 -u ${target})`);
  }
}

/**
 * `call` on the mountpoint, or INVALID_ARGUMENT once MOUNTPOINT_DEADLINE_MS passed: a FUSE mount
 * there whose process is alive but stopped or wedged answers nothing, and its caller waits in
 * the kernel for ever (found by a fault hunt: a second `fanout mount` hung). The call's thread
 * stays blocked; the command ends with the error, and its exit ends the thread.
 */
async function answering<T>(target: string, call: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new FanoutError('INVALID_ARGUMENT', `${target} does not answer within ${MOUNTPOINT_DEADLINE_MS / 1000} s: a mount there is hung (a stopped fanout mount?); detach it with fusermount3 -u -z ${target}, then mount again`),
        ),
      MOUNTPOINT_DEADLINE_MS,
    );
  });
  try {
    return await Promise.race([call, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
const MOUNTPOINT_DEADLINE_MS = 5000;

/** Lazy unmount with the FUSE helper, or umount -l where it is missing. */
async function detach(target: string): Promise<void> {
  const run = (cmd: string, args: string[]) =>
    new Promise<number>((resolveRun) => {
      const proc = spawn(cmd, args, { stdio: 'ignore' });
      proc.once('error', () => resolveRun(-1));
      proc.once('exit', (code) => resolveRun(code ?? -1));
    });
  if ((await run('fusermount3', ['-u', '-z', target])) === 0) return;
  if ((await run('umount', ['-l', target])) === 0) return;
  throw new FanoutError('INTERNAL', `cannot unmount the stale mount at ${target}: run fusermount3 -u -z ${target}`);
}

/** Mount points and types from /proc/self/mountinfo (octal escapes decoded). */
async function mountedFilesystems(): Promise<{ mountpoint: string; fstype: string }[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [before, after = ''] = line.split(' - ');
      return { mountpoint: unescape(before!.split(' ')[4] ?? ''), fstype: after.split(' ')[0] ?? '' };
    });
}

/**
 * The kernel starts FUSE mounts with a 128 KiB readahead; sequential reads then arrive as
 * small requests. Raising the mount's read_ahead_kb (root only) lets them arrive as 1 MiB ones.
 */
async function raiseKernelReadahead(target: string, bytes: number, log: MountLogger): Promise<void> {
  try {
    const { dev } = await stat(target); // answered by this process's own FUSE session
    const major = ((dev >> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    await writeFile(`/sys/class/bdi/${major}:${minor}/read_ahead_kb`, String(Math.floor(bytes / 1024)));
  } catch (err) {
    log.info({ err: (err as Error).message }, 'kept the kernel default readahead for the mount');
  }
}
