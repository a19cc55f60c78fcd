import type { IncomingMessage, ServerResponse } from 'node:http';
import { crc32 } from '../lib/checksum/index.js';
import type { Logger } from 'pino';
import { FanoutError } from '../core/errors.js';
import { pageSpan } from '../core/pages.js';
import { parseFanoutPath } from '../core/paths.js';
import { pageKey } from '../lib/pagekey/index.js';
import type { Member, PageRef } from '../core/types.js';
import type { PageFetcher } from '../lib/cluster/index.js';
import type { PagePolicy, PageStore } from '../lib/pagestore/index.js';
import { TokenBucket } from '../lib/ratelimit/index.js';
import { contentMatches } from './content.js';
import { checkPageSize, readJsonBody, sendJson } from './http.js';
import type { z } from 'zod';
import { ADMIN_BODIES } from '../lib/wire/index.js';

export interface AdminDeps {
  store: PageStore;
  policy: PagePolicy;
  fetcher: PageFetcher;
  pageSize: number;
  /** Throws UNKNOWN_MOUNT for a name that is not one of this worker's mounts. */
  checkMount: (mount: string) => void;
  /** This worker, as a member: loads go through its own page endpoint (single flight, owners, verification). */
  self: () => Member;
  logger: Logger;
  signal: AbortSignal;
}

const MAX_BODY = 16 * 1024 * 1024;
const LOAD_CONCURRENCY = 4;

/*
 * Admin bodies are checked at the edge with the schemas of lib/wire (shared with the clients):
 * anything else (null, an array, a string, wrong types, a body naming nothing) is a 400
 * INVALID_ARGUMENT that says what was expected, never a 500. Unknown fields are ignored so
 * older and newer CLIs keep working.
 */
const BODY_SCHEMAS = ADMIN_BODIES;

type AdminRoute = keyof typeof BODY_SCHEMAS;

/**
 * The worker's admin API (POST, JSON bodies):
 *   /v1/admin/load    {pages: PageRef[], verify?, rate?, pageSize?}  fetch pages into this worker's store
 *   /v1/admin/pin     {keys?, rule?}                      never evict these pages
 *   /v1/admin/unpin   {keys?, rule?}
 *   /v1/admin/free    {keys?, rule?}                      delete pages (and their pins/TTLs); forget a rule
 *                                                         (pages are named by key: the store does not find them by path)
 *   /v1/admin/ttl     {keys?, rule?, ttlMs}               drop pages ttlMs after now / after storing
 *   GET /v1/admin/policy                                  pins, TTLs and rules in force
 * and the sweeper that deletes pages whose TTL ran out.
 */
export class Admin {
  private sweeper: NodeJS.Timeout | undefined;
  /** Loads running now, with their live counters (the dashboard's loads in flight). */
  private readonly running = new Set<LoadProgress>();

  constructor(private readonly deps: AdminDeps) {}

  start(intervalMs = 1000): void {
    this.sweeper = setInterval(() => void this.sweep().catch((err) => this.deps.logger.warn({ err }, 'TTL sweep failed')), intervalMs);
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
  }

  /** The loads in progress on this worker. */
  loads(): LoadProgress[] {
    return [...this.running];
  }

  async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const route = (req.url ?? '').split('?')[0]!;
    const { policy } = this.deps;
    // A known route asked with another method says which it takes, as the read API does (policy
    // answered POST and HEAD with 404 "no such endpoint").
    if (route === '/v1/admin/policy') {
      if (req.method === 'GET' || req.method === 'HEAD') return sendJson(res, 200, policy.summary());
      res.setHeader('allow', 'GET, HEAD');
      throw new FanoutError('INVALID_ARGUMENT', `${route} takes GET`);
    }
    if (!(route in BODY_SCHEMAS)) throw new FanoutError('NOT_FOUND', `no such endpoint: ${route.slice(0, 200)}`);
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      throw new FanoutError('INVALID_ARGUMENT', `${route} takes POST`);
    }
    const raw = await readJsonBody(req, MAX_BODY, 'admin request');
    switch (route as AdminRoute) {
      case '/v1/admin/load': {
        const body = parseBody('/v1/admin/load', raw);
        // A caller that leaves stops its load: nobody would see the answer of the pages still to come.
        const left = new AbortController();
        res.once('close', () => left.abort(new FanoutError('ABORTED', 'the caller of the load left')));
        return sendJson(res, 200, await this.load(body.pages, body.verify === true, body.rate ?? 0, left.signal, body.pageSize));
      }
      case '/v1/admin/pin': {
        const { keys = [], rule } = parseBody('/v1/admin/pin', raw);
        this.checkRule(rule);
        await policy.pin(keys, rule);
        return sendJson(res, 200, { pinned: keys.length, held: keys.filter((k) => this.deps.store.has(k)).length });
      }
      case '/v1/admin/unpin': {
        const { keys = [], rule } = parseBody('/v1/admin/unpin', raw);
        await policy.unpin(keys, rule);
        return sendJson(res, 200, { unpinned: keys.length });
      }
      case '/v1/admin/ttl': {
        const { keys = [], rule, ttlMs } = parseBody('/v1/admin/ttl', raw);
        this.checkRule(rule);
        await policy.setTtl(keys, ttlMs, rule);
        return sendJson(res, 200, { keys: keys.length, ttlMs });
      }
      case '/v1/admin/free': {
        const { keys = [], rule } = parseBody('/v1/admin/free', raw);
        let freed = 0;
        for (const key of keys) if (await this.deps.store.delete(key)) freed++;
        await policy.forget(keys, rule);
        return sendJson(res, 200, { freed });
      }
    }
  }

  /**
   * A rule that pins or sets TTLs names one of this worker's mounts and a path prefix a page
   * could have (UNKNOWN_MOUNT, INVALID_PATH): one that could never match would be kept, and shown,
   * for ever. Unpin and free take any rule, so that one left from a removed mount can go.
   */
  private checkRule(rule: { mount: string; prefix: string } | undefined): void {
    if (!rule) return;
    this.deps.checkMount(rule.mount);
    const prefix = rule.prefix.replace(/\/+$/, '');
    if (prefix !== '') parseFanoutPath(`/${rule.mount}/${prefix}`);
  }

  /**
   * Makes sure this worker holds each page: pages already there are skipped (so an interrupted
   * load resumes), the others are read through this worker's own page endpoint and kept.
   */
  private async load(pages: PageRef[], verify: boolean, rate: number, callerGone: AbortSignal, askedPageSize?: number) {
    const { store, pageSize, fetcher } = this.deps;
    const signal = AbortSignal.any([this.deps.signal, callerGone]);
    const limiter = rate > 0 ? new TokenBucket({ rate, burst: Math.max(pageSize, Math.floor(rate / 4)) }) : undefined;
    const result = { present: 0, loaded: 0, bytesLoaded: 0, verified: 0, failed: [] as { path: string; index: number; code: string; message: string }[] };
    let next = 0;
    const bytesTotal = pages.reduce((sum, ref) => sum + spanLength(ref, pageSize), 0);
    const progress: LoadProgress = { startedAt: new Date().toISOString(), pages: pages.length, bytesTotal, rate, result };
    const one = async (ref: PageRef) => {
      // Pages planned in another page size (`fanout load` mid-way through a rolling restart to
      // another pageSize: planned by a worker of the old one) are refused, each with its index.
      // Before, this worker loaded its own page of that index, another span of the file: the
      // report counted them loaded (more bytes than the file has), the planned pages stayed
      // unloaded, and indexes past its last page failed RANGE_NOT_SATISFIABLE "outside the file".
      if (askedPageSize !== undefined) checkPageSize(askedPageSize, pageSize);
      const key = pageKey(ref, pageSize);
      const { start, end } = pageSpan(ref.index, ref.size, pageSize);
      if (store.has(key)) {
        if (!verify) return void result.present++;
        const page = await store.get(key); // CRC32 checked; a bad page is dropped and reloaded below
        if (page) {
          const ok = contentMatches(ref, page.data);
          page.release();
          if (ok) {
            result.present++;
            result.verified++;
            return;
          }
          await store.delete(key);
        }
      }
      await limiter?.take(end - start, signal);
      // A preload: lines serve it after the reads clients wait for.
      const chunks = await fetcher.fetch(this.deps.self(), ref, end - start, { signal, preload: true, pageSize: this.deps.pageSize });
      if (!store.has(key)) {
        const data = Buffer.concat(chunks);
        if (!contentMatches(ref, data)) {
          throw new FanoutError('HASH_MISMATCH', `page ${ref.index} of /${ref.mount}/${ref.path} does not have the expected SHA-256`);
        }
        // Its pin or TTL saved first: a kill after the page's file would leave it unruled (policy.ts).
        await this.deps.policy.onStoring(key, ref.mount, ref.path);
        await store.put(key, data, crc32(data));
      }
      result.loaded++;
      result.bytesLoaded += end - start;
      if (verify) result.verified++;
    };
    const run = async () => {
      while (next < pages.length && !signal.aborted) {
        const ref = pages[next++]!;
        try {
          await one(ref);
        } catch (err) {
          const e = err instanceof FanoutError ? err : new FanoutError('INTERNAL', (err as Error).message);
          result.failed.push({ path: `/${ref.mount}/${ref.path}`, index: ref.index, code: e.code, message: e.message });
        }
      }
    };
    this.running.add(progress);
    try {
      await Promise.all(Array.from({ length: Math.min(LOAD_CONCURRENCY, pages.length) }, run));
    } finally {
      this.running.delete(progress);
    }
    return result;
  }

  private async sweep(): Promise<void> {
    const expired = this.deps.policy.expired();
    if (expired.length === 0) return;
    for (const key of expired) await this.deps.store.delete(key);
    await this.deps.policy.forget(expired);
  }
}

/** A load while it runs: `result` is the answer being built, so its counts move as pages land. */
export interface LoadProgress {
  startedAt: string;
  pages: number;
  bytesTotal: number;
  /** bytes/s asked for (0 = unlimited). */
  rate: number;
  result: { present: number; loaded: number; bytesLoaded: number; verified: number; failed: unknown[] };
}

/** A page's length, 0 for a page past its file's end (that page fails on its own, in `one`). */
function spanLength(ref: PageRef, pageSize: number): number {
  try {
    const { start, end } = pageSpan(ref.index, ref.size, pageSize);
    return end - start;
  } catch {
    return 0;
  }
}


function parseBody<R extends AdminRoute>(route: R, raw: unknown): z.infer<(typeof BODY_SCHEMAS)[R]['schema']> {
  const { schema, shape } = BODY_SCHEMAS[route];
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    const got = raw === null ? 'null' : Array.isArray(raw) ? 'an array' : `a ${typeof raw}`;
    throw new FanoutError('INVALID_ARGUMENT', `${route} takes a JSON object ${shape}, got ${got}`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const at = issue.path.length > 0 ? ` at "${issue.path.join('.')}"` : '';
    throw new FanoutError('INVALID_ARGUMENT', `${route}: ${issue.message}${at}; expected ${shape}`);
  }
  return parsed.data as z.infer<(typeof BODY_SCHEMAS)[R]['schema']>;
}
