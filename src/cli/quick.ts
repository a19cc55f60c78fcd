import { parseHedge, type HedgeSetting } from '../lib/cluster/hedge.js';
import type { GlobalOptions } from './output.js';

/**
 * `fanout cat`, `stat`, `ls` and `cp` without commander. Scripts and serving hosts run them many
 * times, and building the whole program (every command, its options, release commands) cost
 * more CPU than the read of a small file. A command line this parser fully understands runs
 * straight away; anything else (help, an unknown or malformed option, another command) returns
 * undefined and goes to the full parser in main.ts, whose behaviour and messages stay the
 * reference: this takes the same options with the same defaults and environment variables.
 */
export interface QuickCommand {
  command: QuickName;
  path: string;
  /** cp's destination. */
  dest?: string;
  options: GlobalOptions & { range?: string; progress?: boolean };
}

export type QuickName = 'cat' | 'stat' | 'ls' | 'cp';

/** Per command: its options taking a value, its flags, how many arguments. */
const COMMANDS: Record<QuickName, { valued: ReadonlySet<string>; flags: ReadonlySet<string>; args: 1 | 2 }> = {
  stat: { valued: new Set(['--endpoint', '--ca']), flags: new Set(['--json']), args: 1 },
  ls: { valued: new Set(['--endpoint', '--ca']), flags: new Set(['--json']), args: 1 },
  cat: { valued: new Set(['--endpoint', '--ca', '--range', '--hedge']), flags: new Set(['--json']), args: 1 },
  cp: { valued: new Set(['--endpoint', '--ca', '--hedge']), flags: new Set(['--json', '--no-progress']), args: 2 },
};

/** Whether `fanout <name> …` may be one parseQuick understands (bin/fanout.js repeats the list, to ask before the bundle loads). */
function isQuickName(name: string | undefined): name is QuickName {
  return name !== undefined && Object.hasOwn(COMMANDS, name);
}

export function parseQuick(argv: string[], env: NodeJS.ProcessEnv = process.env): QuickCommand | undefined {
  const command = argv[2];
  if (!isQuickName(command)) return undefined;
  const spec = COMMANDS[command];
  const values = new Map<string, string>();
  const flags = new Set<string>();
  const positional: string[] = [];
  const args = argv.slice(3);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('-') || arg === '-') {
      if (positional.length === spec.args) return undefined; // an extra argument: commander's error to give
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (spec.flags.has(name) && eq < 0) {
      flags.add(name);
      continue;
    }
    if (!spec.valued.has(name)) return undefined; // --help, -h, --, unknown options
    const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
    if (value === undefined) return undefined;
    values.set(name, value);
  }
  if (positional.length !== spec.args) return undefined;
  const options: QuickCommand['options'] = {
    endpoint: values.get('--endpoint') ?? env.FANOUT_ENDPOINT ?? 'http://127.0.0.1:7450',
    ca: values.get('--ca') ?? env.FANOUT_CA,
  };
  if (options.ca === undefined) delete options.ca;
  if (flags.has('--json')) options.json = true;
  if (command === 'cat' || command === 'cp') {
    let hedge: HedgeSetting = 'auto';
    if (values.has('--hedge')) {
      try {
        hedge = parseHedge(values.get('--hedge'));
      } catch {
        return undefined; // commander words the usage error
      }
    }
    options.hedge = hedge;
  }
  if (values.has('--range')) options.range = values.get('--range');
  if (command === 'cp') options.progress = !flags.has('--no-progress'); // commander's default for a --no- flag
  const [path, dest] = positional as [string, string | undefined];
  return dest === undefined ? { command, path, options } : { command, path, dest, options };
}

/**
 * Runs a command line parseQuick understood: true once it has run (exit code set as main()
 * sets it), false when main() must take it.
 */
export async function runQuick(argv: string[]): Promise<boolean> {
  const quick = parseQuick(argv);
  if (!quick) return false;
  try {
    if (quick.command === 'cp') {
      await (await import('./read.js')).cp(quick.path, quick.dest!, quick.options);
    } else if (quick.command === 'ls') {
      await (await import('./read.js')).ls(quick.path, quick.options);
    } else {
      const reads = await import('./cat.js');
      await (quick.command === 'cat' ? reads.cat(quick.path, quick.options) : reads.stat(quick.path, quick.options));
    }
  } catch (err) {
    const { reportError } = await import('./output.js');
    process.exitCode = reportError(err, quick.options.json === true);
  }
  return true;
}
