import { Option, type Command } from 'commander';

/** Registers `release …`, `sync`, `load`, `free`, `pin`, `unpin` and `ttl` on the program. */
export function registerReleaseCommands(program: Command, clientCommand: (spec: string, description: string) => Command): void {
  const collect = (value: string, previous: string[] = []) => [...previous, value];
  const release = () => import('./release.js');
  // etcd password auth: FANOUT_ETCD_USER and FANOUT_ETCD_PASSWORD (environment only).
  const etcd = (command: Command) =>
    command
      .addOption(new Option('--etcd <urls>', 'etcd endpoints (comma-separated)').env('FANOUT_ETCD'))
      .addOption(new Option('--etcd-ca <file>', "CA of etcd's TLS certificate (https:// endpoints)").env('FANOUT_ETCD_CA'))
      .addOption(new Option('--etcd-cert <file>', 'client certificate for etcd --client-cert-auth').env('FANOUT_ETCD_CERT'))
      .addOption(new Option('--etcd-key <file>', 'key of --etcd-cert').env('FANOUT_ETCD_KEY'));
  const withEndpoint = (command: Command) =>
    command
      .addOption(new Option('--endpoint <url>', 'any worker of the cluster').env('FANOUT_ENDPOINT').default('http://127.0.0.1:7450'))
      .addOption(new Option('--ca <file>', 'CA bundle (PEM) trusted for https:// workers').env('FANOUT_CA'))
      .option('--json', 'machine-readable output');

  const rel = program.command('release').description('publish, promote and roll back versions of a release');
  etcd(withEndpoint(rel.command('publish <name> <source-prefix>')))
    .description('hash every file under /MOUNT/DIR/ and publish it as an immutable version')
    .option('--version <v>', 'version name (default: a UTC timestamp)')
    .option('--mount <name=uri>', 'the source of the mount, read directly (repeatable)', collect)
    .option('--config <file>', 'worker config to take mount sources (and S3 settings) from')
    .option('--page-size <size>', "page size of the hashes (default: the cluster's)")
    .action(async (name: string, prefix: string, o) => (await release()).publish(name, prefix, o));
  etcd(withEndpoint(rel.command('promote <name> <version>')))
    .description('point a channel at a version (compare-and-swap)')
    .requiredOption('--channel <c>', 'channel, e.g. prod (every host), or prod@dc-b (the hosts of dc-b)')
    .option('--datacenter <dc>', 'scope the channel to one datacenter (same as --channel C@DC)')
    .option('--expect <version>', 'only if the channel is at this version now')
    .action(async (name: string, version: string, o) => (await release()).promote(name, version, o));
  etcd(withEndpoint(rel.command('rollback <name>')))
    .description('point a channel back at its previous version')
    .requiredOption('--channel <c>', 'channel (prod, or prod@dc-b for one datacenter)')
    .option('--datacenter <dc>', 'scope the channel to one datacenter (same as --channel C@DC)')
    .action(async (name: string, o) => (await release()).rollback(name, o));
  etcd(withEndpoint(rel.command('rollout <name> <version>')))
    .description('staged rollout: promote CHANNEL@CANARY, wait for its hosts to switch, then the next datacenters')
    .option('--channel <c>', 'channel', 'prod')
    .requiredOption('--canary <dc>', 'datacenter promoted first; its hosts must all switch')
    .option('--then <dcs>', 'datacenters promoted next, one after the other (comma-separated)')
    .option('--rest', 'finally promote CHANNEL itself: every host')
    .option('--timeout <duration>', 'how long each wave may take to switch', '30m')
    .action(async (name: string, version: string, o) => (await import('./rollout.js')).rolloutCommand(name, version, o));
  etcd(withEndpoint(rel.command('list <name>')))
    .description('versions and channels of a release')
    .action(async (name: string, o) => (await release()).list(name, o));
  etcd(withEndpoint(rel.command('show <name> <version>')))
    .description('one version: size, pages, manifest (verified through the cluster)')
    .option('--files', 'list the files')
    .action(async (name: string, version: string, o) => (await release()).show(name, version, o));
  etcd(withEndpoint(rel.command('status <name>')))
    .description('channels, and every sync agent: current version, progress, errors')
    .action(async (name: string, o) => (await release()).status(name, o));

  etcd(clientCommand('sync <name>', 'keep DIR/current at a channel\'s version (the agent on a serving host)'))
    .requiredOption('--channel <c>', 'channel to follow')
    .requiredOption('--dir <dir>', 'release directory (DIR/current is switched atomically)')
    .option('--keep <n>', 'older versions kept on disk besides the current one', '1')
    .option('--on-switch <cmd>', 'shell command run after each switch')
    .option('--hook-timeout <duration>', 'an --on-switch hook still running after this long is ended (SIGTERM, then SIGKILL to its process group)', '5m')
    .option('--no-repair', 'report damaged files of the current version (RELEASE_DAMAGED) but do not fetch them again and switch')
    .option('--once', 'one round, then exit')
    .option('--interval <duration>', 'safety-net re-read of the channel (promotions arrive through an etcd watch)', '30s')
    .option('--host <name>', 'name reported in release status (default: hostname; a second agent on one host, or a second machine with the same hostname, needs its own)')
    .addOption(new Option('--datacenter <dc>', 'this host\'s datacenter: follow CHANNEL@DC when it moved after CHANNEL').env('FANOUT_DATACENTER'))
    .option('--rate <rate>', 'cap on bytes/s fetched from the cluster while staging, e.g. 500MB/s')
    .option('--metrics <host:port>', 'serve Prometheus metrics (behind the channel, phase, failures) at http://HOST:PORT/metrics')
    .action(async (name: string, o) => (await import('./sync.js')).sync(name, o));

  const load = () => import('./load.js');
  const adminTimeout = (command: Command) =>
    command.option('--admin-timeout <duration>', 'deadline of each admin call to a worker, e.g. 5s (default: 30s; a load call 10m, or twice its bytes at --rate)');
  adminTimeout(etcd(clientCommand('load [path]', 'preload a path or --release NAME@V into the cluster, split across workers')))
    .option('--release <name@version>', 'the pages of a published release')
    .option('--replicas <r>', 'copies of each page', '1')
    .option('--rate <rate>', 'cap on the total source read rate, e.g. 200MB/s')
    .option('--verify', 'check every page held (CRC32, and SHA-256 for release pages)')
    .option('--pin', 'pin what is loaded')
    .option('--ttl <duration>', 'drop what is loaded after this long')
    .option('--no-progress', 'no progress bar')
    .action(async (path: string | undefined, o) => (await load()).load(path, o));
  for (const [verb, what] of [
    ['free', 'drop the cached pages of a path (or --release) from every worker'],
    ['pin', 'keep the pages of a path (or --release) from being evicted'],
    ['unpin', 'let pinned pages be evicted again'],
  ] as const) {
    adminTimeout(etcd(clientCommand(`${verb} [path]`, what)))
      .option('--release <name@version>', 'the pages of a published release')
      .action(async (path: string | undefined, o) => (await load()).policy(verb, path, o));
  }
  adminTimeout(etcd(clientCommand('ttl <path> <duration>', 'drop the pages of a path this long after they are cached (0 clears)')))
    .action(async (path: string, duration: string, o) => (await load()).ttl(path, duration, o));
}
