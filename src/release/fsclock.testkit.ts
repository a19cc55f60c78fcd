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
