import { setFlagsFromString } from 'node:v8';

/**
 * How much a function runs before V8 optimizes it, for commands that end in a second or so
 * (`sync --once`, `cp`, `load`, `release`…): 16 times V8's default (67,584 bytecode-size units), so only
 * code that stays hot through a long transfer gets there. A one-shot sync of 2,000 small files
 * spent 0.19 s of background CPU in the optimizing compiler (perf), about a fifth of the CPU the
 * process uses, for code that would have finished before the optimized version paid back; on a
 * 2-core host that compiler runs beside the command and the worker it reads from.
 */
export const SHORT_COMMAND_INTERRUPT_BUDGET = 16 * 67_584;

/**
 * The daemons (a worker, `serve`, `mount`, `sync` following a channel) run for days: for them V8's
 * defaults are the right trade, and they keep them.
 */
export function isDaemon(argv: readonly string[]): boolean {
  const command = argv[2];
  if (command === 'serve' || command === 'worker' || command === 'mount') return true;
  return command === 'sync' && !argv.slice(3).includes('--once');
}

/** V8 flags for the command line `argv` (process.argv), or none. */
export function jitFlags(argv: readonly string[]): string[] {
  return isDaemon(argv) ? [] : [`--interrupt-budget=${SHORT_COMMAND_INTERRUPT_BUDGET}`];
}

/**
 * Applies jitFlags before the command's code is loaded (bin/fanout.js). Set at run time rather
 * than on node's command line, which an npm bin cannot carry; it governs the code loaded after it
 * (measured: the sync agent's TurboFan samples 191 → 20, docs/benchmarks.md).
 */
export function tuneJit(argv: readonly string[]): void {
  for (const flag of jitFlags(argv)) setFlagsFromString(flag);
}
