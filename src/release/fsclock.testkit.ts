import { FileSystemClock } from './fsclock.js';

/**
 * For tests: a file system clock read as standing in the tick of every file's last change (time
 * 0: no ctime is older), which is what a stamp taken right after a file changed must assume on a
 * kernel with coarse timestamps. Every stamp taken against it is racy.
 */
export class StoppedClock extends FileSystemClock {
  constructor() {
    super('/nonexistent');
  }
  override now = async (): Promise<bigint> => 0n;
  override pastNow = async (): Promise<bigint> => 0n;
}

/**
 * For tests: a file system clock that stands in the tick of every change (time 0) until someone
 * waits for it to move on (pastNow), and from then on reads far past every ctime. It builds the
 * state where a change was stamped in its own tick, and the clock had moved on by the time the
 * stamps were checked or saved.
 */
export class StandingClock extends FileSystemClock {
  private moved = false;
  constructor() {
    super('/nonexistent');
  }
  override now = async (): Promise<bigint> => (this.moved ? 1n << 62n : 0n);
  override pastNow = async (): Promise<bigint> => {
    this.moved = true;
    return 1n << 62n;
  };
}

/** For tests: the real clock of `probe`, with `before` run at each wait for it to move on (pastNow): a stand-in for what happens just then. */
export class ClockWithStep extends FileSystemClock {
  constructor(
    probe: string,
    private readonly before: () => Promise<void>,
  ) {
    super(probe);
  }
  override async pastNow(): Promise<bigint | undefined> {
    await this.before();
    return super.pastNow();
  }
}
