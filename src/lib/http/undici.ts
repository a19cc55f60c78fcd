import { createRequire } from 'node:module';

const requireCjs = createRequire(import.meta.url);

/**
 * undici, loaded on first use: a short CLI command (`fanout cat` of a small file, `stat`) never
 * needs it, and loading it was the largest part of such a command's start-up. Pages travel on
 * the lean client (lib/leanhttp); undici serves admin calls, probes and reports.
 */
export function undici(): typeof import('undici') {
  return requireCjs('undici') as typeof import('undici');
}
