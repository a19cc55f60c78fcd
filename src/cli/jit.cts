// CommonJS (.cts → .cjs), loaded by bin/fanout.js without starting Node's ES module loader.
import { setFlagsFromString } from 'node:v8';

/**
 * How much a function runs before V8 optimizes it: 16 times V8's default (67,584 bytecode-size
 * units), so only code that stays hot gets there. Every fanout process spends its first second or
 * so on code that runs a few thousand times and is never seen again (start-up, the first cold
 * burst), and V8's optimizing compiler ran for it beside everything else: a one-shot sync of
 * 2,000 small files spent 0.19 s of background CPU in it (perf, a fifth of the process's CPU), a
 * FUSE mount's first cold read of those files a quarter of its CPU per file. Code that stays hot
 * is optimized a little later and runs the same from then on (docs/benchmarks.md: benchmarks 2,
 * 3 and 5 against the default).
 */
export const INTERRUPT_BUDGET = 16 * 67_584;

/**
 * The V8 the budget was measured on: Node 20's (11.x). A later one tiers differently (Maglev in
 * between) and might not know the flag (V8 then prints an error on every start), so it keeps its
 * defaults until measured.
 */
const MEASURED_V8 = /^11\./;

/**
 * Applies the budget before the command's code is loaded (bin/fanout.js): set at run time because
 * an npm bin cannot put flags on node's command line; it governs the code compiled after it.
 * Returns whether it was applied (only on the V8 it was measured on).
 */
export function tuneJit(v8Version = process.versions.v8): boolean {
  if (!MEASURED_V8.test(v8Version)) return false;
  setFlagsFromString(`--interrupt-budget=${INTERRUPT_BUDGET}`);
  return true;
}
