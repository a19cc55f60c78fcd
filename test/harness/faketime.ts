import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A process's wall clock that the test steps, as an NTP step, a resumed VM or a clock set by hand
 * would, without touching the machine's clock: libfaketime (Debian's libfaketime, installed by
 * scripts/install-system-deps.sh) preloaded into the process shifts CLOCK_REALTIME by the offset
 * written in a file it reads at each clock call. The monotonic clock (performance.now(), libuv's
 * timers) and file times (stat) stay true.
 */
export class SteppedWallClock {
  readonly env: NodeJS.ProcessEnv;

  constructor(private readonly offsetFile: string) {
    writeFileSync(offsetFile, '+0\n');
    this.env = {
      LD_PRELOAD: libfaketime(),
      FAKETIME_TIMESTAMP_FILE: offsetFile,
      FAKETIME_NO_CACHE: '1',
      FAKETIME_DONT_FAKE_MONOTONIC: '1',
      NO_FAKE_STAT: '1',
    };
  }

  /** Steps the process's wall clock to `seconds` from the true time (negative: back). */
  step(seconds: number): void {
    writeFileSync(this.offsetFile, `${seconds >= 0 ? '+' : ''}${seconds}\n`);
  }
}

function libfaketime(): string {
  const found = readdirSync('/usr/lib')
    .map((dir) => join('/usr/lib', dir, 'faketime', 'libfaketime.so.1'))
    .find((path) => existsSync(path));
  if (!found) throw new Error('libfaketime not found under /usr/lib/*/faketime: run scripts/install-system-deps.sh');
  return found;
}
