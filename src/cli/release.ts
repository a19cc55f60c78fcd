import { resolve } from 'node:path';
import { FanoutClient } from '../client/index.js';
import { FanoutError } from '../core/errors.js';
import { formatBytes, parseSize } from '../core/pages.js';
import { parseFanoutPath } from '../core/paths.js';
import { plural, printJson, printTable, type GlobalOptions } from './output.js';

/** `fanout release …`: publish, promote, rollback, list, show, status. */

export interface ReleaseFlags extends GlobalOptions {
  etcd?: string;
}

export interface PublishFlags extends ReleaseFlags {
  version?: string;
  mount?: string[];
  config?: string;
  pageSize?: string;
}

// etcd and the S3 SDK load only when a release command runs.
async function registry(flags: ReleaseFlags) {
  const { ReleaseRegistry, etcdConnection } = await import('../release/registry.js');
  return new ReleaseRegistry(etcdConnection(flags));
}

export async function publish(name: string, sourcePrefix: string, flags: PublishFlags): Promise<void> {
  const target = parseFanoutPath(sourcePrefix);
  if (!target.mount) throw new FanoutError('INVALID_ARGUMENT', 'SOURCE_PREFIX is /MOUNT/DIR/, e.g. /models/llm/v2/');
  const { uri, s3 } = await mountSource(target.mount, flags);
  const { openUfs } = await import('../lib/ufs/index.js');
  const { publishRelease } = await import('../release/publish.js');
  const pageSize = flags.pageSize ? parseSize(flags.pageSize) : await clusterPageSize(flags);
  const reg = await registry(flags);
  const ufs = openUfs(uri, s3);
  const tty = !flags.json && process.stderr.isTTY;
  try {
    const record = await publishRelease({
      name,
      version: flags.version,
      mount: target.mount,
      prefix: target.path,
      pageSize,
      ufs,
      registry: reg,
      onProgress: (p) => {
        if (tty) process.stderr.write(`\rhashing: ${p.files}/${p.totalFiles} files, ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)}   `);
      },
    });
    if (tty) process.stderr.write('\n');
    if (flags.json) return printJson(record);
    process.stdout.write(
      `published ${record.name}@${record.version}: ${plural(record.files, 'file')}, ${formatBytes(record.bytes)}, ` +
        `${plural(record.pages, 'page')} (${record.uniquePages} distinct)\nmanifest /${record.mount}/${record.manifest} sha256 ${record.manifestSha256}\n`,
    );
  } finally {
    await ufs.close?.();
    await reg.close();
  }
}

export interface ChannelFlags extends ReleaseFlags {
  channel: string;
  /** Scope the channel to one datacenter: the same as --channel C@DC. */
  datacenter?: string;
}

export async function promote(name: string, version: string, flags: ChannelFlags & { expect?: string }): Promise<void> {
  const { channelOf, promoteChannel } = await import('../release/scope.js');
  const channel = channelOf(flags.channel, flags.datacenter);
  const reg = await registry(flags);
  try {
    const result = await promoteChannel(reg, name, channel, version, flags.expect);
    if (flags.json) return printJson({ name, channel, version, previous: result.previous });
    process.stdout.write(`${name} ${channel}: ${result.previous ?? '(none)'} → ${version}\n`);
  } finally {
    await reg.close();
  }
}

export async function rollback(name: string, flags: ChannelFlags): Promise<void> {
  const { channelOf } = await import('../release/scope.js');
  const channel = channelOf(flags.channel, flags.datacenter);
  const reg = await registry(flags);
  try {
    const result = await reg.rollback(name, channel);
    if (flags.json) return printJson({ name, channel, ...result });
    process.stdout.write(`${name} ${channel}: rolled back ${result.from} → ${result.to}\n`);
  } finally {
    await reg.close();
  }
}

export async function list(name: string, flags: ReleaseFlags): Promise<void> {
  const reg = await registry(flags);
  try {
    const [versions, channels] = await Promise.all([reg.listVersions(name), reg.listChannels(name)]);
    if (flags.json) return printJson({ name, versions, channels });
    const on = (v: string) => Object.entries(channels).filter(([, c]) => c.version === v).map(([n]) => n).join(',');
    printTable([
      ['VERSION', 'CREATED', 'FILES', 'SIZE', 'PAGES', 'CHANNELS'],
      ...versions.map((v) => [v.version, v.createdAt, String(v.files), formatBytes(v.bytes), `${v.pages} (${v.uniquePages} distinct)`, on(v.version)]),
    ]);
  } finally {
    await reg.close();
  }
}

export async function show(name: string, version: string, flags: ReleaseFlags & { files?: boolean }): Promise<void> {
  const reg = await registry(flags);
  const { ReleaseFetcher } = await import('../release/fetch.js');
  const client = new FanoutClient({ endpoint: flags.endpoint, ca: flags.ca });
  const fetcher = new ReleaseFetcher(client);
  try {
    const record = await reg.getVersion(name, version);
    // Reading the manifest through the cluster also checks its digest.
    const manifest = await fetcher.manifest(record).catch((err: FanoutError) => {
      if (err.code === 'MANIFEST_INVALID') throw err;
      return undefined;
    });
    if (flags.json) return printJson({ ...record, manifestVerified: manifest !== undefined, files: manifest?.files ?? record.files });
    printTable([
      ['release', `${record.name}@${record.version}`],
      ['source', `/${record.mount}/${record.prefix}`],
      ['created', record.createdAt],
      ['files', String(record.files)],
      ['size', `${record.bytes} (${formatBytes(record.bytes)})`],
      ['pages', `${record.pages} of ${formatBytes(record.pageSize)} (${record.uniquePages} distinct)`],
      ['manifest', `/${record.mount}/${record.manifest}`],
      ['sha256', `${record.manifestSha256}${manifest ? ' (verified)' : ' (cluster unreachable: not verified)'}`],
    ]);
    if (manifest && flags.files) {
      process.stdout.write('\n');
      printTable(manifest.files.map((f) => [f.sha256.slice(0, 16), formatBytes(f.size), f.path]));
    }
  } finally {
    await fetcher.close();
    await client.close();
    await reg.close();
  }
}

export async function status(name: string, flags: ReleaseFlags): Promise<void> {
  const { rolloutByDatacenter } = await import('../release/dcstatus.js');
  const reg = await registry(flags);
  try {
    const [states, agents] = await Promise.all([reg.channelStates(name), reg.listAgents(name)]);
    const channels = Object.fromEntries(Object.entries(states).map(([c, s]) => [c, s.record]));
    const datacenters = rolloutByDatacenter(agents, states);
    if (flags.json) return printJson({ name, channels, datacenters, agents });
    printTable([['CHANNEL', 'VERSION', 'PREVIOUS', 'UPDATED'], ...Object.entries(channels).map(([c, r]) => [c, r.version, r.history[0] ?? '-', r.updatedAt])]);
    process.stdout.write('\n');
    printTable([
      ['DATACENTER', 'CHANNEL', 'FOLLOWS', 'VERSION', 'HOSTS', 'SWITCHED', 'STAGING', 'FAILED', 'BEHIND'],
      ...datacenters.map((d) => [d.datacenter || '-', d.channel, d.following ?? '-', d.version ?? '-', ...[d.hosts, d.switched, d.staging, d.failed, d.behind].map(String)]),
    ]);
    const errors = datacenters.flatMap((d) => d.errors.map((e) => `  ${d.datacenter || '-'} ${e.host}: ${e.error}`));
    if (errors.length > 0) process.stdout.write(`errors:\n${errors.join('\n')}\n`);
    process.stdout.write('\n');
    printTable([
      ['HOST', 'DATACENTER', 'CHANNEL', 'CURRENT', 'TARGET', 'PHASE', 'PROGRESS', 'ERROR'],
      ...agents.map((a) => [
        a.host,
        a.datacenter ?? '-',
        a.following ?? a.channel,
        a.current ?? '-',
        a.target ?? '-',
        a.phase,
        a.phase === 'staging' && a.bytesTotal > 0 ? `${((100 * a.bytesDone) / a.bytesTotal).toFixed(1)}% (${formatBytes(a.bytesLocal)} local)` : '-',
        a.error ?? '',
      ]),
    ]);
    const switched = datacenters.reduce((sum, d) => sum + d.switched, 0);
    process.stdout.write(`\n${plural(agents.length, 'host')}, ${switched} on their channel's version, ${agents.length - switched} not\n`);
  } finally {
    await reg.close();
  }
}

/** The source URI of a mount: --mount NAME=URI, else the worker config given with --config. */
async function mountSource(mount: string, flags: PublishFlags): Promise<{ uri: string; s3?: Record<string, unknown> }> {
  for (const spec of flags.mount ?? []) {
    const eq = spec.indexOf('=');
    if (spec.slice(0, eq) === mount) {
      const uri = spec.slice(eq + 1);
      return { uri: /^[a-z][a-z0-9+.-]*:\/\//i.test(uri) ? uri : resolve(uri) };
    }
  }
  if (flags.config) {
    const { loadWorkerConfig } = await import('../lib/config/index.js');
    const config = await loadWorkerConfig(flags.config);
    const entry = (config.mounts as Record<string, unknown>)[mount];
    const uri = typeof entry === 'string' ? entry : (entry as { uri?: string } | undefined)?.uri;
    if (uri) return { uri, s3: config.s3 };
  }
  throw new FanoutError('INVALID_ARGUMENT', `publishing reads mount "${mount}" directly: give --mount ${mount}=URI or --config worker.yaml`);
}

async function clusterPageSize(flags: GlobalOptions): Promise<number> {
  const client = new FanoutClient({ endpoint: flags.endpoint, ca: flags.ca });
  try {
    return (await client.cluster()).pageSize;
  } catch (err) {
    throw new FanoutError('WORKER_UNAVAILABLE', `cannot learn the cluster's page size (${(err as Error).message}); give --page-size`);
  } finally {
    await client.close();
  }
}
