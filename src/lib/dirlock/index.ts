import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import { link, mkdir, open, readFile, rename, rm, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FanoutError } from '../../core/errors.js';
import { addonPath, optionalAddon } from '../addons/index.js';
import { isNotWritable } from '../statefile/index.js';
import { bootId, startTime } from '../procstat/index.js';

/** Rounds of create / read / take over before giving up (each takes milliseconds). */
const ATTEMPTS = 100;

/** What a directory's lock is for: its file's name and how a live holder is told to the caller. */
export interface DirLockUse {
  /** The lock file's name in the directory. */
  name: string;
  /** The error for directory `dir` held by a live process (`pid`, '?' if its lock does not say). */
  inUse(dir: string, pid: string): FanoutError;
  /** The option naming the directory, for a directory that cannot be written (`--dir`). */
  option: string;
}

/** The sync agent's: one agent per --dir. */
export const SYNC_DIR: DirLockUse = {
  name: '.sync.lock',
  option: '--dir',
  inUse: (dir, pid) => new FanoutError('DIR_IN_USE', `${dir} is synced by another agent (pid ${pid}): one agent per directory`),
};

/**
 * Takes DIR/<use.name> for this process: it holds the process's pid, start time, a nonce (two
 * locks of one process differ) and the boot's id. Two processes on one directory would each undo
 * the other's work (two sync agents clear each other's staging; two workers each other's fills).
 * A lock whose process is gone (killed, crashed, or of an earlier boot: a service started at boot
 * may get the same pid and start time again) is taken over. Node has no flock, so every step is a
 * create-if-absent (link) or a check of content that nobody else may change:
 *   - the lock is written under a temporary name and linked into place, so it is never seen empty;
 *   - a stale lock is removed only by the one taker that created the claim named after its
 *     content, after reading it once more: two takers reading and then removing it would let the
 *     slower one delete the lock the faster one had just created;
 *   - it is released only while it still holds our content.
 * A holder in another PID namespace (another container on a shared volume, such as the old and
 * the new pod of a rolling update over one host directory) cannot be seen by its pid: where the
 * files addon is built, the holder also keeps flock(2) on DIR/<use.name>.flock, which the kernel
 * drops when its process ends however it ends, in whatever namespace (see holdFlock). Returns its
 * release.
 */
export async function lockDir(dir: string, use: DirLockUse = SYNC_DIR): Promise<() => Promise<void>> {
  await mkdir(dir, { recursive: true }).catch(notWritable(dir, use.option));
  const file = join(dir, use.name);
  const flocked = await holdFlock(file, dir, use);
  try {
    const unlock = await lockByContent(file, dir, use);
    return async () => {
      await unlock();
      if (flocked) await releaseFlock(flocked);
    };
  } catch (err) {
    if (flocked) await releaseFlock(flocked);
    throw err;
  }
}

/** The lock file holding this process's identity, taking over a dead holder's (see lockDir). */
async function lockByContent(file: string, dir: string, use: DirLockUse): Promise<() => Promise<void>> {
  const me = identity();
  let held = '';
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    if (await createExclusive(file, me).catch(notWritable(dir, use.option))) return () => removeIfContent(file, me);
    const read = await readFile(file, 'utf8').catch(() => undefined);
    if (read === undefined) continue; // released meanwhile
    held = read;
    const [pid, started, , boot] = held.trim().split(' ');
    if (Number(pid) > 0 && holderAlive(Number(pid), started, boot)) break;
    await removeStale(file, held, me);
  }
  throw use.inUse(dir, pidIn(held));
}

const pidIn = (lock: string | undefined) => lock?.trim().split(' ')[0] || '?';

/** The files addon's flock, where it is built (an addon of an older build has none). */
const flockAddon = optionalAddon<{ flockExclusive?: (fd: number) => number }>(addonPath('files', 'fanout_files'), process.platform !== 'linux');

/**
 * Open files holding a flock, until released: a FileHandle no longer referenced is closed by the
 * garbage collector, which would drop the lock while its holder runs (a caller may keep only the
 * release function, or not even that, for a lock held until the process ends).
 */
const flocks = new Set<FileHandle>();

/**
 * flock(2) on `${file}.flock`, held open until released: undefined where none can be taken (no
 * addon, a file system without locks, a file that cannot be created: the lock file alone decides
 * then, as before). Another process holding it, in any PID namespace, is a live holder: `inUse`,
 * with the pid its lock file gives (the pid in the holder's own namespace). The file is never
 * removed, so every process locks the same inode.
 */
async function holdFlock(file: string, dir: string, use: DirLockUse): Promise<FileHandle | undefined> {
  const flock = flockAddon?.flockExclusive;
  if (!flock) return undefined;
  const handle = await open(`${file}.flock`, 'a').catch(() => undefined);
  if (!handle) return undefined;
  const errno = flock(handle.fd);
  if (errno === 0) {
    flocks.add(handle);
    return handle;
  }
  await handle.close();
  if (errno === constants.errno.EWOULDBLOCK) throw use.inUse(dir, pidIn(await readFile(file, 'utf8').catch(() => undefined)));
  return undefined;
}

async function releaseFlock(handle: FileHandle): Promise<void> {
  flocks.delete(handle);
  await handle.close().catch(() => {});
}

/** Removes `stale` from `file` if it is still there, as the one taker of it; otherwise waits a moment. */
async function removeStale(file: string, stale: string, me: string): Promise<void> {
  const claim = `${file}.takeover-${createHash('sha256').update(stale).digest('hex').slice(0, 16)}`;
  if (!(await createExclusive(claim, me))) {
    // Another taker is on it (for milliseconds), or died on it, leaving its claim for good.
    await removeDeadClaim(claim);
    await new Promise((r) => setTimeout(r, 5 + Math.random() * 10));
    return;
  }
  try {
    // Only the claim's holder removes this content, and a dead agent's lock is never written
    // again: if it is still there, nobody can replace it between this read and the rm.
    if ((await readFile(file, 'utf8').catch(() => undefined)) === stale) await rm(file, { force: true });
  } finally {
    // A taker arriving later with the same stale content finds it gone and removes nothing.
    await rm(claim, { force: true });
  }
}

/**
 * A claim whose taker died between creating and removing it would block every takeover. It is
 * moved aside and checked to be the dead taker's: if a live taker's claim was moved instead,
 * it is put back.
 */
async function removeDeadClaim(claim: string): Promise<void> {
  const content = await readFile(claim, 'utf8').catch(() => undefined);
  if (content === undefined) return;
  const [pid, started, , boot] = content.trim().split(' ');
  if (Number(pid) > 0 && holderAlive(Number(pid), started, boot)) return;
  const aside = `${claim}.dead-${randomBytes(6).toString('hex')}`;
  try {
    await rename(claim, aside);
  } catch {
    return; // removed meanwhile
  }
  if ((await readFile(aside, 'utf8').catch(() => undefined)) !== content) await link(aside, claim).catch(() => {});
  await rm(aside, { force: true });
}

/** A directory that cannot be written (read-only file system, permissions) as INVALID_CONFIG naming it; other errors as they are. */
function notWritable(dir: string, option: string): (err: unknown) => never {
  return (err) => {
    if (isNotWritable(err)) throw new FanoutError('INVALID_CONFIG', `cannot write in ${dir} (${option}): ${(err as Error).message}`, { cause: err });
    throw err;
  };
}

/** Creates `file` holding `content` unless it exists; never visible half written. */
async function createExclusive(file: string, content: string): Promise<boolean> {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(tmp, content, { flag: 'wx' });
  try {
    await link(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

async function removeIfContent(file: string, content: string): Promise<void> {
  // Nobody removes a live holder's lock, so it cannot change between this read and the rm.
  if ((await readFile(file, 'utf8').catch(() => undefined)) === content) await rm(file, { force: true });
}

function identity(): string {
  return `${process.pid} ${startTime('self')} ${randomBytes(6).toString('hex')} ${bootId()}`;
}

/** `boot`: the holder's boot id (locks of older builds have none; '-' where /proc did not say). */
function holderAlive(pid: number, started: string | undefined, boot: string | undefined): boolean {
  if (boot !== undefined && boot !== '-' && boot !== bootId()) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return started === undefined || started === '-' || startTime(pid) === started;
}
