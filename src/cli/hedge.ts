import { InvalidArgumentError, Option } from 'commander';
// The policy module alone: the cluster index would load the page transport with every command.
import { parseHedge, type HedgeSetting } from '../lib/cluster/hedge.js';

/**
 * `--hedge MS|auto|off`: when to ask a second worker for a page the first has not delivered.
 * Validated while parsing, so a typo fails before any request is sent.
 */
export function hedgeOption(): Option {
  return new Option('--hedge <ms|auto|off>', 'ask the next worker for a page stalled this long: auto (from observed latency), a delay such as 200ms, or off')
    .default('auto')
    .argParser((value: string): HedgeSetting => {
      try {
        return parseHedge(value);
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
    });
}
