import { parseHedge, type HedgeSetting } from '../lib/cluster/hedge.js';
import type { GlobalOptions } from './output.js';

/**
 * `fanout cat` and `fanout stat` without commander. Scripts and serving hosts run them many
 * times, and building the whole program (every command, its options, release commands) cost
 * more CPU than the read of a small file. A command line this parser fully understands runs
 * straight away; anything else (help, an unknown or malformed option, another command) returns
 * undefined and goes to the full parser in main.ts, whose behaviour and messages stay the
 * reference: this takes the same options with the same defaults and environment variables.
 */
export interface QuickCommand {
  command: 'cat' | 'stat';
  path: string;
  options: GlobalOptions & { range?: string };
}

/** Options taking a value, per command; boolean options. */
const VALUED: Record<QuickCommand['command'], ReadonlySet<string>> = {
  stat: new Set(['--endpoint', '--ca']),
  cat: new Set(['--endpoint', '--ca', '--range', '--hedge']),
};
const FLAGS = new Set(['--json']);

export function parseQuick(argv: string[], env: NodeJS.ProcessEnv = process.env): QuickCommand | undefined {
  const command = argv[2];
  if (command !== 'cat' && command !== 'stat') return undefined;
  const values = new Map<string, string>();
  let json = false;
  let path: string | undefined;
  const args = argv.slice(3);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('-') || arg === '-') {
      if (path !== undefined) return undefined; // an extra argument: commander's error to give
      path = arg;
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (FLAGS.has(name) && eq < 0) {
      json = true;
      continue;
    }
    if (!VALUED[command].has(name)) return undefined; // --help, -h, --, unknown options
    const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
    if (value === undefined) return undefined;
    values.set(name, value);
  }
  if (path === undefined) return undefined;
  const options: QuickCommand['options'] = {
    endpoint: values.get('--endpoint') ?? env.FANOUT_ENDPOINT ?? 'http://127.0.0.1:7450',
    ca: values.get('--ca') ?? env.FANOUT_CA,
  };
  if (options.ca === undefined) delete options.ca;
  if (json) options.json = true;
  if (command === 'cat') {
    let hedge: HedgeSetting = 'auto';
    if (values.has('--hedge')) {
      try {
        hedge = parseHedge(values.get('--hedge'));
      } catch {
        return undefined; // commander words the usage error
      }
    }
    options.hedge = hedge;
    if (values.has('--range')) options.range = values.get('--range');
  }
  return { command, path, options };
}

/**
 * Runs a command line parseQuick understood: true once it has run (exit code set as main()
 * sets it), false when main() must take it.
 */
export async function runQuick(argv: string[]): Promise<boolean> {
  const quick = parseQuick(argv);
  if (!quick) return false;
  try {
    const reads = await import('./cat.js');
    await (quick.command === 'cat' ? reads.cat(quick.path, quick.options) : reads.stat(quick.path, quick.options));
  } catch (err) {
    const { reportError } = await import('./output.js');
    process.exitCode = reportError(err, quick.options.json === true);
  }
  return true;
}
