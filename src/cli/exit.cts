// CommonJS (.cts → .cjs): bin/fanout.js ends every command through it, without Node's ES module loader.
import { join } from 'node:path';

/**
 * How long process.exit() may take before the watchdog ends the process: a healthy exit has
 * only V8's threads left to join by then (milliseconds), a hung one would never end.
 */
export const EXIT_WATCHDOG_MS = 2000;

export const EXIT_ADDON_PATH = join(__dirname, '../../../native/exit/build/Release/fanout_exit.node');

interface ExitAddon {
  armExitWatchdog(ms: number, code: number): void;
}

/**
 * Ends the process with `code`, as process.exit() does, with native/exit's watchdog armed as it exits:
 * Node's exit can hang for ever when a V8 compile job waits for a garbage collection the exiting
 * main thread will never run (nodejs/node#54918; a `fanout cat` of 2 GiB hung so here). The
 * watchdog then ends the process with the same code. Without the addon (not built), process.exit
 * alone.
 */
export function exitProcess(code: number): never {
  const status = code & 0xff;
  let addon: ExitAddon | undefined;
  try {
    // process.dlopen, not require(): no module resolution for the last step of every command (as
    // lib/addons loads the data path's addons; that ES module is not loaded by this CommonJS one).
    const module = { exports: {} };
    process.dlopen(module, EXIT_ADDON_PATH);
    addon = module.exports as ExitAddon;
  } catch {
    // not built (no compiler), or built for another Node: exit as Node does
  }
  // Armed by the last 'exit' listener, so the others run whatever they take; what follows them is
  // Node's own teardown, where the hang is.
  if (addon) process.once('exit', () => addon.armExitWatchdog(EXIT_WATCHDOG_MS, status));
  process.exit(status);
}
