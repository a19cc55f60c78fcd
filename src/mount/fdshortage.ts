import { monotonicClock, type Clock } from '../core/clock.js';
import { currentOpenFileLimit } from '../lib/fdlimit/index.js';
import type { MountLog } from './fs.js';

/** A minute: how long the mount stays quiet about a shortage it has already told of. */
const QUIET_MS = 60_000;

/**
 * Tells of the mount process running out of file descriptors: once when it starts, naming the
 * limit, then at most once a minute with the count of requests it failed meanwhile. Before, each
 * failed read logged two lines ("read /data/f1.bin failed: EIO") and none named the limit.
 */
export class DescriptorShortageLog {
  private lastTold = -Infinity;
  private failedSince = 0;

  constructor(
    private readonly log: MountLog,
    private readonly clock: Clock = monotonicClock,
  ) {
    currentOpenFileLimit(); // its descriptor opened now, while there are fds to open it
  }

  note(code: 'EMFILE' | 'ENFILE', op: string, path: string): void {
    const now = this.clock.now();
    if (now - this.lastTold < QUIET_MS) {
      this.failedSince++;
      return;
    }
    const limit = currentOpenFileLimit();
    const why =
      code === 'EMFILE'
        ? `this mount process has no file descriptor left (EMFILE): its open-file limit (ulimit -n, LimitNOFILE) is ${limit ?? 'unknown'}`
        : 'the host has no file descriptor left (ENFILE: the system-wide open-file table is full)';
    this.log.warn(
      { op, path, code, limit, failedSince: this.failedSince },
      `${why}; requests that need a new connection to a worker fail with ${code} ("Too many open files") until descriptors free up` +
        (this.failedSince ? ` (${this.failedSince} more failed since the last such line)` : '') +
        (code === 'EMFILE' ? '. Raise the limit of the fanout mount process, or lower --threads' : ''),
    );
    this.lastTold = now;
    this.failedSince = 0;
  }
}
