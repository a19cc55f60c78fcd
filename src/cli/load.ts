import { AdminClient, FanoutClient, LOAD_DEADLINE_MS, type ClusterInfo } from '../client/index.js';
import { FanoutError } from '../core/errors.js';
import { formatBytes, pageCount, pageSpan, parseSize } from '../core/pages.js';
import { pageKey } from '../lib/pagekey/index.js';
import { joinFanoutPath, parseFanoutPath } from '../core/paths.js';
import type { Member, PageRef } from '../core/types.js';
import { durationSchema } from '../lib/config/index.js';
import { HashRing } from '../lib/hashring/index.js';
import { fanoutPath, plural, printJson, type GlobalOptions } from './output.js';
import { CopyProgress } from './progress.js';
import { parseDuration } from './sync.js';

/** `fanout load`, `free`, `pin`, `unpin`, `ttl`: the cluster-side controls of what is cached. */

export interface TargetFlags extends GlobalOptions {
  release?: string;
  etcd?: string;
  /** Deadline of each admin call (--admin-timeout), e.g. 5s. */
  adminTimeout?: string;
}

export interface LoadFlags extends TargetFlags {
  replicas?: string;
  rate?: string;
  verify?: boolean;
  pin?: boolean;
  ttl?: string;
  progress?: boolean;
}

interface Pages {
  refs: PageRef[];
  bytes: number;
  /** The path rule (mount, prefix) that also covers pages stored later. */
  rule: { mount: string; prefix: string };
}

/** Pages per admin call: 16 full pages, or up to 64 small ones (the files of a search index). */
const BATCH = 16;
const SMALL_BATCH = 64;
/**
 * Seconds of work a paced load call is sized to. The worker answers a load call only when the
 * whole batch is in: 16 pages of 4 MiB at 64 KiB/s took 17 minutes and failed at the deadline.
 */
const PACED_CALL_SECONDS = 60;
/** Load calls in flight per worker when no rate is set. */
const CALLS_PER_WORKER = 4;

/**
 * Preloads pages into the cluster, each on its owners: the plan is made here (the same ring
 * every worker computes) and each worker is asked to load the pages it owns, all workers in
 * parallel. Pages already held are skipped, so running it again after an interruption
 * finishes the job. Replica copies are loaded after the primaries, from them.
 */
export async function load(path: string | undefined, flags: LoadFlags): Promise<void> {
  const replicas = Number(flags.replicas ?? 1);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 8) throw new FanoutError('INVALID_ARGUMENT', '--replicas must be 1–8');
  const rate = flags.rate ? parseSize(flags.rate) : 0;
  const deadlineMs = adminTimeoutMs(flags);
  await withTargetPages(path, flags, async ({ admin, info, pages }) => {
    const ring = new HashRing(info.members);
    const started = performance.now();
    const json = flags.json === true;
    const total = pages.bytes * replicas;
    const bar = flags.progress !== false && !json && process.stderr.isTTY ? new CopyProgress(total, process.stderr, { suffix: ' | {pages} pages', extra: { pages: 0 } }) : undefined;
    const report = { pages: pages.refs.length, bytes: pages.bytes, replicas, present: 0, loaded: 0, bytesLoaded: 0, verified: 0, failed: [] as unknown[], workers: {} as Record<string, number> };
    let doneBytes = 0;
    let donePages = 0;
    for (let copy = 0; copy < replicas; copy++) {
      const plan = new Map<string, { member: Member; refs: PageRef[] }>();
      for (const ref of pages.refs) {
        const member = ring.owners(pageKey(ref, info.pageSize), replicas)[copy];
        if (!member) continue;
        const entry = plan.get(member.id) ?? { member, refs: [] };
        entry.refs.push(ref);
        plan.set(member.id, entry);
      }
      // Workers refuse preload rates under 64 KiB/s (a page would take minutes): a small total
      // rate over many workers is rounded up to that.
      const perWorkerRate = rate > 0 ? Math.max(64 * 1024, Math.floor(rate / Math.max(1, plan.size))) : 0;
      // Unpaced, several calls per worker overlap (a worker loads 4 pages per call at a time,
      // so one call after the other left small pages waiting on round trips). Paced, one call
      // at a time: each call paces itself at the worker's whole share of the rate.
      const lanes = perWorkerRate > 0 ? 1 : CALLS_PER_WORKER;
      await Promise.all(
        [...plan.values()].map(async ({ member, refs }) => {
          const batches = batchesOf(refs, info.pageSize, batchBytes(info.pageSize, perWorkerRate));
          let nextBatch = 0;
          const lane = async () => {
            while (nextBatch < batches.length) {
              const batch = batches[nextBatch++]!;
              const bytes = batch.reduce((s, r) => s + pageLength(r, info.pageSize), 0);
              const result = await admin.load(member.url, { pages: batch, verify: flags.verify === true, rate: perWorkerRate, pageSize: info.pageSize }, loadDeadlineMs(bytes, perWorkerRate, deadlineMs));
              report.present += result.present;
              report.loaded += result.loaded;
              report.bytesLoaded += result.bytesLoaded;
              report.verified += result.verified;
              report.failed.push(...result.failed);
              report.workers[member.id] = (report.workers[member.id] ?? 0) + result.bytesLoaded;
              doneBytes += bytes;
              donePages += batch.length;
              bar?.update(doneBytes, { pages: donePages });
              if (json) process.stdout.write(JSON.stringify({ event: 'progress', pages: donePages, bytes: doneBytes, total }) + '\n');
            }
          };
          await Promise.all(Array.from({ length: Math.min(lanes, batches.length) }, lane));
        }),
      );
    }
    bar?.finish(doneBytes, { pages: donePages });
    const target = { keys: keysOf(pages, info.pageSize), rule: pages.rule };
    if (flags.pin) await everyWorker('pin', info.members, (m) => admin.pin(m.url, target, deadlineMs));
    if (flags.ttl) await everyWorker('ttl', info.members, (m) => admin.ttl(m.url, { ...target, ttlMs: parseDuration(flags.ttl!) }, deadlineMs));
    const seconds = (performance.now() - started) / 1000;
    // One object per line: progress events, then this report (NDJSON).
    if (json) process.stdout.write(JSON.stringify({ event: 'done', path: fanoutPath(pages.rule.mount, pages.rule.prefix), ...report, seconds }) + '\n');
    else {
      process.stdout.write(
        `loaded ${plural(report.pages, 'page')} (${formatBytes(report.bytes)}) × ${replicas}: ${report.loaded} fetched (${formatBytes(report.bytesLoaded)}), ` +
          `${report.present} already cached${flags.verify ? `, ${report.verified} verified` : ''}, ${report.failed.length} failed, ${seconds.toFixed(2)} s\n`,
      );
      for (const f of report.failed.slice(0, 10)) process.stdout.write(`  failed: ${JSON.stringify(f)}\n`);
    }
    if (report.failed.length > 0) process.exitCode = 1;
  });
}

/** free, pin, unpin: the same pages on every worker (a page may sit on any of them). */
export async function policy(verb: 'free' | 'pin' | 'unpin', path: string | undefined, flags: TargetFlags): Promise<void> {
  const deadlineMs = adminTimeoutMs(flags);
  await withTargetPages(path, flags, async ({ admin, info, pages }) => {
    const target = { keys: keysOf(pages, info.pageSize), rule: pages.rule };
    const results = await everyWorker<unknown>(verb, info.members, (m) => admin[verb](m.url, target, deadlineMs));
    if (flags.json) return printJson({ [verb]: pages.refs.length, path: fanoutPath(pages.rule.mount, pages.rule.prefix), rule: pages.rule, workers: results });
    const freed = verb === 'free' ? `, ${results.reduce((sum: number, r) => sum + ((r as { freed?: number }).freed ?? 0), 0)} deleted` : '';
    process.stdout.write(`${verb}: ${plural(pages.refs.length, 'page')} of ${joinFanoutPath(pages.rule.mount, pages.rule.prefix)} on ${plural(info.members.length, 'worker')}${freed}\n`);
  });
}

export async function ttl(path: string, duration: string, flags: TargetFlags): Promise<void> {
  const ttlMs = parseDuration(duration);
  const deadlineMs = adminTimeoutMs(flags);
  await withTargetPages(path, flags, async ({ admin, info, pages }) => {
    await everyWorker('ttl', info.members, (m) => admin.ttl(m.url, { keys: keysOf(pages, info.pageSize), rule: pages.rule, ttlMs }, deadlineMs));
    if (flags.json) return printJson({ ttlMs, pages: pages.refs.length, path: fanoutPath(pages.rule.mount, pages.rule.prefix), rule: pages.rule });
    process.stdout.write(`ttl ${duration} on ${plural(pages.refs.length, 'cached page')} and future pages of ${joinFanoutPath(pages.rule.mount, pages.rule.prefix)}\n`);
  });
}

/**
 * Runs a command on the pages of a path or release: with a client, the cluster as it is now
 * (asked afresh: the pages are planned on its ring and page size) and an admin client over them.
 */
async function withTargetPages(
  path: string | undefined,
  flags: TargetFlags,
  command: (target: { admin: AdminClient; info: ClusterInfo; pages: Pages }) => Promise<void>,
): Promise<void> {
  const client = new FanoutClient({ endpoint: flags.endpoint, ca: flags.ca });
  try {
    const info = await client.cluster(true);
    const pages = await resolvePages(client, path, flags, info.pageSize);
    await command({ admin: new AdminClient(client), info, pages });
  } finally {
    await client.close();
  }
}

/** The pages of a path (a file, or every file below a directory) or of a release's manifest. */
async function resolvePages(client: FanoutClient, path: string | undefined, flags: TargetFlags, pageSize: number): Promise<Pages> {
  if (flags.release) {
    const at = flags.release.lastIndexOf('@');
    if (at <= 0) throw new FanoutError('INVALID_ARGUMENT', '--release takes NAME@VERSION');
    const { ReleaseRegistry, etcdConnection } = await import('../release/registry.js');
    const { ReleaseFetcher } = await import('../release/fetch.js');
    const { sourcePathOf } = await import('../release/manifest.js');
    const registry = new ReleaseRegistry(etcdConnection(flags));
    const fetcher = new ReleaseFetcher(client);
    try {
      const manifest = await fetcher.manifest(await registry.getVersion(flags.release.slice(0, at), flags.release.slice(at + 1)));
      if (manifest.pageSize !== pageSize) throw new FanoutError('INVALID_ARGUMENT', `release pages are ${manifest.pageSize} bytes, the cluster's ${pageSize}`);
      const seen = new Set<string>();
      const refs: PageRef[] = [];
      let bytes = 0;
      for (const file of manifest.files) {
        file.pages.forEach((hash, index) => {
          if (seen.has(hash)) return; // one copy of each distinct page
          seen.add(hash);
          const ref = { mount: manifest.mount, path: sourcePathOf(manifest, file), version: file.sourceVersion, size: file.size, index, hash };
          refs.push(ref);
          bytes += pageLength(ref, pageSize);
        });
      }
      return { refs, bytes, rule: { mount: manifest.mount, prefix: manifest.prefix } };
    } finally {
      await fetcher.close();
      await registry.close();
    }
  }
  if (!path) throw new FanoutError('INVALID_ARGUMENT', 'give a PATH or --release NAME@VERSION');
  const target = parseFanoutPath(path);
  if (!target.mount) throw new FanoutError('INVALID_ARGUMENT', 'PATH is /MOUNT/PATH');
  const files: { path: string; size: number; version: string }[] = [];
  const visit = async (dir: string) => {
    for (const entry of await client.list(joinFanoutPath(target.mount, dir))) {
      const child = dir ? `${dir}/${entry.name}` : entry.name;
      if (entry.type === 'dir') await visit(child);
      else if (entry.size !== undefined && entry.version !== undefined) files.push({ path: child, size: entry.size, version: entry.version });
    }
  };
  try {
    const info = await client.stat(path);
    files.push({ path: info.path, size: info.size, version: info.version });
  } catch (err) {
    if (!(err instanceof FanoutError) || err.code !== 'IS_A_DIRECTORY') throw err;
    await visit(target.path);
  }
  const refs: PageRef[] = [];
  let bytes = 0;
  for (const f of files) {
    for (let index = 0; index < pageCount(f.size, pageSize); index++) refs.push({ mount: target.mount, path: f.path, version: f.version, size: f.size, index });
    bytes += f.size;
  }
  return { refs, bytes, rule: { mount: target.mount, prefix: target.path } };
}

/** Bytes of one load call: BATCH full pages, or about PACED_CALL_SECONDS of work at a rate (at least one page). */
export function batchBytes(pageSize: number, rate: number): number {
  if (rate <= 0) return BATCH * pageSize;
  return Math.min(BATCH * pageSize, Math.max(pageSize, rate * PACED_CALL_SECONDS));
}

/**
 * Deadline of one load call: the usual one (10 min, or --admin-timeout), or twice the time its
 * bytes take at the rate when that is longer (one large page at a low rate: 64 MiB at 64 KiB/s is
 * 17 minutes by itself), so a paced call never fails by its own pace.
 */
export function loadDeadlineMs(bytes: number, rate: number, usualMs = LOAD_DEADLINE_MS): number {
  return rate > 0 ? Math.max(usualMs, Math.ceil((2 * bytes * 1000) / rate)) : usualMs;
}

/**
 * --admin-timeout in ms (the config's duration syntax: 500ms, 5s, 2m), or undefined for the
 * defaults: a stopped worker then costs pin, unpin, free and ttl 30 s and a load call 10 min.
 * 0 is refused: it would mean no deadline at all.
 */
export function adminTimeoutMs(flags: Pick<TargetFlags, 'adminTimeout'>): number | undefined {
  if (flags.adminTimeout === undefined) return undefined;
  const parsed = durationSchema.safeParse(flags.adminTimeout);
  if (!parsed.success) throw new FanoutError('INVALID_ARGUMENT', `--admin-timeout: ${parsed.error.issues[0]?.message ?? 'invalid duration'}`);
  if (parsed.data === 0) throw new FanoutError('INVALID_ARGUMENT', '--admin-timeout must be more than 0 (e.g. 5s)');
  return parsed.data;
}

/** Consecutive pages in batches of at most maxBytes (one page at least) and SMALL_BATCH pages. */
export function batchesOf(refs: PageRef[], pageSize: number, maxBytes: number): PageRef[][] {
  const batches: PageRef[][] = [];
  let batch: PageRef[] = [];
  let bytes = 0;
  for (const ref of refs) {
    const length = pageLength(ref, pageSize);
    if (batch.length > 0 && (batch.length >= SMALL_BATCH || bytes + length > maxBytes)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(ref);
    bytes += length;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}

function keysOf(pages: Pages, pageSize: number): string[] {
  return pages.refs.map((r) => pageKey(r, pageSize));
}

function pageLength(ref: PageRef, pageSize: number): number {
  const { start, end } = pageSpan(ref.index, ref.size, pageSize);
  return end - start;
}

/**
 * The same admin call on every worker (a page may sit on any of them). A worker that fails or
 * does not answer must not keep the call from the others: every worker is asked, and only then
 * are the ones that failed named, in one error (the command exits non-zero).
 */
export async function everyWorker<T>(verb: string, members: Member[], call: (member: Member) => Promise<T>): Promise<T[]> {
  const settled = await Promise.allSettled(members.map(call));
  const failures = settled.flatMap((s, i) => (s.status === 'rejected' ? [{ member: members[i]!, err: s.reason as unknown }] : []));
  if (failures.length === 0) return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
  const first = failures[0]!.err;
  const code = first instanceof FanoutError ? first.code : 'WORKER_UNAVAILABLE';
  const named = failures.map(({ member, err }) => `${member.id}: ${(err as Error)?.message ?? String(err)}`).join('; ');
  throw new FanoutError(code, `${verb} done on ${members.length - failures.length} of ${plural(members.length, 'worker')}, failed on ${failures.length}: ${named}`, { cause: first });
}
