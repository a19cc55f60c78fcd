import { type BigIntStats } from 'node:fs';
import { lstat, lutimes, open } from 'node:fs/promises';

/** How long pastNow() waits for the file system's clock to move on: beyond a tick (≤ 10 ms), a coarse file system (1 s on ext3, 2 s on FAT). */
const MAX_WAIT_MS = 2_500;

/**
 * The clock that file systems stamp ctimes with, read where the stamped files live: the ctime a
 * touch of a probe file gets. A stamp (inode, size, ctime) tells a later write only if that
 * write gets another ctime, and ctimes come from a coarse clock (a few ms; whole seconds on some
 * file systems): a write in the tick of the file's last change keeps its ctime. So, as git does
 * with racily clean index entries, a stamp counts only when the file's ctime is older than the
 * clock read *before* the stat: every write after the stat then gets a later ctime. A stamp of
 * a file changed in the clock's current tick is racy: not recorded, the file is hashed again the
 * next time it is checked, and stamped then.
 */
export class FileSystemClock {
  constructor(private readonly probe: string) {}

  /**
   * The file system's time now (nanoseconds): no change made before the call has a later ctime,
   * and every change after it has at least this one. Undefined when the probe cannot be touched
   * (a read-only or full file system): then no stamp is taken, files are hashed instead.
   */
  async now(): Promise<bigint | undefined> {
    try {
      // utimes, not a write: it sets the ctime to the clock's time without needing a free block.
      // lutimes and lstat: a link planted at the probe's name is touched itself, never its target
      // (the agent runs as root: utimes set a planted link's target's times to 1970, and the
      // probe's creation wrote through a dangling one). Any inode's ctime shows the clock.
      await lutimes(this.probe, 0, 0).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
        // O_EXCL: created only where nothing is, a link planted since included.
        await open(this.probe, 'wx').then(
          (handle) => handle.close(),
          (e: NodeJS.ErrnoException) => {
            if (e.code !== 'EEXIST') throw e;
          },
        );
        await lutimes(this.probe, 0, 0);
      });
      return (await lstat(this.probe, { bigint: true })).ctimeNs;
    } catch {
      return undefined;
    }
  }

  /**
   * A time of the file system's clock later than every change made before the call: waits for
   * the clock to move past now (a tick; at once where the kernel has multigrain timestamps).
   * Stamps taken after it are not racy for files last changed before the call, such as the
   * files an install or a repair has just renamed or linked. Past MAX_WAIT_MS, the time the clock
   * shows then (stamps of files changed in its tick are racy and left out).
   */
  async pastNow(): Promise<bigint | undefined> {
    const start = await this.now();
    if (start === undefined) return undefined;
    // Monotonic: the file system's clock is the wall clock, and one set back would keep both from moving.
    const until = performance.now() + MAX_WAIT_MS;
    for (let wait = 1; ; wait = Math.min(wait * 2, 100)) {
      const now = await this.now();
      if (now === undefined || now > start || performance.now() >= until) return now;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

/** Whether a stat's stamp can be trusted: the file's last change is older than `clock`, read before the stat. */
export function settledBefore(st: BigIntStats, clock: bigint | undefined): boolean {
  return clock !== undefined && st.ctimeNs < clock;
}

/**
 * Readings of a clock that each begin after the call that asks for them (as a stamp needs: the
 * clock read after the change it follows, before the stat), shared by the calls made while none
 * has begun: thousands of small files renamed together cost a few readings, not one each.
 */
export class ClockReadings {
  private last: Promise<unknown> = Promise.resolve();
  private next: Promise<bigint | undefined> | undefined;

  constructor(private readonly clock: FileSystemClock) {}

  /** A reading of the clock begun after this call. */
  after(): Promise<bigint | undefined> {
    if (this.next) return this.next;
    // A reading already begun may have touched the probe before the caller's change: this one waits for it.
    const next = this.last.then(() => {
      if (this.next === next) this.next = undefined;
      return this.clock.now();
    });
    this.next = next;
    this.last = next;
    return next;
  }
}
