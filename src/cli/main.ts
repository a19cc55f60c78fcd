import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import type { DaemonFlags } from './daemon.js';
import type { MountFlags } from './mount.js';
import { reportError, type GlobalOptions } from './output.js';
import { registerReleaseCommands } from './release-commands.js';
import { hedgeOption } from './hedge.js';

/** The version in package.json (dist/src/cli/ → the package root): one small synchronous read. */
function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

// Each command loads its own modules when it runs, not when the program is built: daemons pull in
// the AWS SDK, etcd and the worker, `cp` a progress bar, and `cat`/`stat` (called many times by
// scripts, where start-up is most of a small read) need only the SDK's read path.
const daemon = () => import('./daemon.js');
const reads = () => import('./cat.js');
const copies = () => import('./read.js');

/** The `fanout` command line: parse, call the SDK or a daemon, print. */
export async function main(argv: string[]): Promise<void> {
  // Only as the first argument: release commands have a --version option of their own.
  if (argv.length === 3 && (argv[2] === '--version' || argv[2] === '-V')) {
    process.stdout.write(`${packageVersion()}\n`);
    return;
  }
  const program = new Command('fanout')
    .description('a distributed read cache for big, hot files (indexes, models)')
    .addHelpText('after', '\nfanout --version (or -V) prints the version of fanout.')
    .showHelpAfterError()
    .exitOverride();

  const collect = (value: string, previous: string[] = []) => [...previous, value];
  const daemonOptions = (command: Command) =>
    command
      .option('--config <file>', 'worker configuration (YAML)')
      .option('--mount <name=uri>', 'mount a source: dir, file://, s3://bucket/prefix, http(s)://… (repeatable)', collect)
      .option('--listen <host:port>', 'address of the HTTP API (default 127.0.0.1:7450)')
      .option('--advertise-url <url>', 'URL other members use to reach this worker')
      .option('--data-dir <dir>', 'page store directory (default ./.fanout or FANOUT_DATA_DIR)')
      .option('--capacity <size>', 'page store capacity, e.g. 50GiB (default 10GiB)')
      .option('--page-size <size>', 'page size, 1MiB–64MiB (default 4MiB)')
      .option('--source-rate <rate>', "each mount's cluster-wide source budget, split over live workers, e.g. 350MB/s")
      .option('--worker-source-rate <rate>', "cap on this worker's source reads across mounts, e.g. 200MB/s")
      .option('--stat-ttl <duration>', 'how long stat/list answers are reused, e.g. 2s (bounded staleness)')
      .option('--id <id>', 'member id (default host:port)')
      .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent')
      .option('--threads <n>', 'cached pages sent by the kernel at once, one thread each (default: the number of cores)')
      .option('--s3-listen <host:port>', 'S3 gateway address, or "off" (serve: default 127.0.0.1:7451; worker: config gateway.listen)')
      .option('--s3-anonymous', 'let unsigned S3 requests in (signed ones are still verified)');

  daemonOptions(program.command('serve [source]').description('run a single-node cluster over a source (default mount name: data)')).action(
    async (source: string | undefined, flags: DaemonFlags) => (await daemon()).serve(source, flags),
  );
  daemonOptions(program.command('worker').description('run a cluster member'))
    .option('--etcd <urls>', 'etcd endpoints (comma-separated) for membership')
    .action(async (flags: DaemonFlags) => (await daemon()).worker(flags));

  const clientCommand = (spec: string, description: string) =>
    program
      .command(spec)
      .description(description)
      .addOption(new Option('--endpoint <url>', 'any worker of the cluster').env('FANOUT_ENDPOINT').default('http://127.0.0.1:7450'))
      .addOption(new Option('--ca <file>', 'CA bundle (PEM) trusted for https:// workers').env('FANOUT_CA'))
      .option('--json', 'machine-readable output');

  clientCommand('ls <path>', 'list a directory, e.g. / or /data/models/').action(async (path: string, o: GlobalOptions) => (await copies()).ls(path, o));
  clientCommand('stat <path>', 'size, modification time and version of a file').action(async (path: string, o: GlobalOptions) => (await reads()).stat(path, o));
  clientCommand('cat <path>', 'write a file (or --range) to stdout')
    .option('--range <start-end>', 'bytes START-END (inclusive), START- or -SUFFIX')
    .addOption(hedgeOption())
    .action(async (path: string, o: GlobalOptions & { range?: string }) => (await reads()).cat(path, o));
  clientCommand('cp <path> <dest>', 'copy a file, or a directory tree like cp -r, out of the cluster (progress bar on a terminal)')
    .option('--no-progress', 'no progress bar')
    .addOption(hedgeOption())
    .action(async (path: string, dest: string, o: GlobalOptions & { progress?: boolean }) => (await copies()).cp(path, dest, o));
  clientCommand('status', 'members, capacity, usage, hit ratio, bytes read from sources').action(async (o: GlobalOptions) => (await import('./status.js')).status(o));
  clientCommand('mount <mountpoint>', 'mount the cluster read-only with FUSE (until Ctrl-C or SIGTERM)')
    .option('--ttl <duration>', 'how long attributes and listings are cached by the mount and the kernel (default 1s)')
    .option('--readahead <pages>', 'pages fetched ahead of a sequential reader (default 8)')
    .option('--cache <size>', 'memory for recently read pages, shared by all readers (default 16MiB)')
    .option('--read-memory <size>', 'memory for the pages reads in flight fetch, shared by all readers; beyond it reads wait (default 256MiB)')
    .option('--kernel-readahead <size>', "the kernel's readahead for the mount (default 4MiB)")
    .option('--threads <n>', 'FUSE threads; a read holds one until its pages arrive (default 32)')
    .option('--allow-other', 'let other users read the mount')
    .option('--no-direct-io', "read large files through the kernel's page cache (default: files of a page or more bypass it)")
    .addOption(hedgeOption())
    .option('--log-level <level>', 'fatal|error|warn|info|debug|silent (default info)')
    .action(async (mountpoint: string, o: MountFlags) => (await import('./mount.js')).mount(mountpoint, o));
  registerReleaseCommands(program, clientCommand);

  try {
    await program.parseAsync(argv);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help') return;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      process.exitCode = 2;
      return;
    }
    const json = argv.includes('--json');
    process.exitCode = reportError(err, json);
  }
}
