import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { Logger } from 'pino';
import { FanoutError } from '../core/errors.js';
import { pageKey, pageSpan } from '../core/pages.js';
import type { Member, PageRef } from '../core/types.js';
import type { PageFetcher } from '../lib/cluster/index.js';
import type { PagePolicy, PageStore } from '../lib/pagestore/index.js';
import { TokenBucket } from '../lib/ratelimit/index.js';
import { sendJson } from './http.js';

export interface AdminDeps {
  store: PageStore;
  policy: PagePolicy;
  fetcher: PageFetcher;
  pageSize: number;
  /** This worker, as a member: loads go through its own page endpoint (single flight, owners, verification). */
  self: () => Member;
  logger: Logger;
  signal: AbortSignal;
}

const MAX_BODY = 16 * 1024 * 1024;
const LOAD_CONCURRENCY = 4;

interface Target {
  keys?: string[];
  rule?: { mount: string; prefix: string };
  ttlMs?: number;
}

/**
 * The worker's admin API (POST, JSON bodies):
 *   /v1/admin/load    {pages: PageRef[], verify?, rate?}  fetch pages into this worker's store
 *   /v1/admin/pin     {keys?, rule?}                      never evict these pages
 *   /v1/admin/unpin   {keys?, rule?}
 *   /v1/admin/free    {keys?, rule?}                      delete pages (and their pins/TTLs)
 *   /v1/admin/ttl     {keys?, rule?, ttlMs}               drop pages ttlMs after now / after storing
 *   GET /v1/admin/policy                                  pins, TTLs and rules in force
 * and the sweeper that deletes pages whose TTL ran out.
 */
export class Admin {
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly deps: AdminDeps) {}

  start(intervalMs = 1000): void {
    this.sweeper = setInterval(() => void this.sweep().catch((err) => this.deps.logger.warn({ err }, 'TTL sweep failed')), intervalMs);
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
  }

  async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const route = (req.url ?? '').split('?')[0]!;
    const { policy } = this.deps;
    if (route === '/v1/admin/policy' && req.method === 'GET') return sendJson(res, 200, policy.summary());
    if (req.method !== 'POST') throw new FanoutError('INVALID_ARGUMENT', `${route} takes POST`);
    const body = (await readJson(req)) as Target & { pages?: PageRef[]; verify?: boolean; rate?: number };
    const keys = checkKeys(body.keys ?? []);
    const rule = body.rule ? checkRule(body.rule) : undefined;
    switch (route) {
      case '/v1/admin/load':
        return sendJson(res, 200, await this.load(body.pages ?? [], body.verify === true, Number(body.rate ?? 0)));
      case '/v1/admin/pin':
        await policy.pin(keys, rule);
        return sendJson(res, 200, { pinned: keys.length, held: keys.filter((k) => this.deps.store.has(k)).length });
      case '/v1/admin/unpin':
        await policy.unpin(keys, rule);
        return sendJson(res, 200, { unpinned: keys.length });
      case '/v1/admin/ttl': {
        const ttlMs = Number(body.ttlMs);
        if (!Number.isFinite(ttlMs) || ttlMs < 0) throw new FanoutError('INVALID_ARGUMENT', 'ttlMs must be ≥ 0');
        await policy.setTtl(keys, ttlMs, rule);
        return sendJson(res, 200, { keys: keys.length, ttlMs });
      }
      case '/v1/admin/free': {
        let freed = 0;
        for (const key of keys) if (await this.deps.store.delete(key)) freed++;
        await policy.forget(keys, rule);
        return sendJson(res, 200, { freed });
      }
      default:
        throw new FanoutError('NOT_FOUND', `no such endpoint: ${route.slice(0, 200)}`);
    }
  }

  /**
   * Makes sure this worker holds each page: pages already there are skipped (so an interrupted
   * load resumes), the others are read through this worker's own page endpoint and kept.
   */
  private async load(pages: PageRef[], verify: boolean, rate: number) {
    const { store, pageSize, fetcher, signal } = this.deps;
    const limiter = rate > 0 ? new TokenBucket({ rate, burst: Math.max(pageSize, Math.floor(rate / 4)) }) : undefined;
    const result = { present: 0, loaded: 0, bytesLoaded: 0, verified: 0, failed: [] as { path: string; index: number; code: string; message: string }[] };
    let next = 0;
    const one = async (ref: PageRef) => {
      const key = pageKey(ref, pageSize);
      const { start, end } = pageSpan(ref.index, ref.size, pageSize);
      if (store.has(key)) {
        if (!verify) return void result.present++;
        const page = await store.get(key); // CRC32 checked; a bad page is dropped and reloaded below
        if (page) {
          const ok = ref.hash === undefined || createHash('sha256').update(page.data).digest('hex') === ref.hash;
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
      const chunks = await fetcher.fetch(this.deps.self(), ref, end - start, { signal });
      if (!store.has(key)) {
        const data = Buffer.concat(chunks);
        if (ref.hash !== undefined && createHash('sha256').update(data).digest('hex') !== ref.hash) {
          throw new FanoutError('HASH_MISMATCH', `page ${ref.index} of /${ref.mount}/${ref.path} does not have the expected SHA-256`);
        }
        await store.put(key, data, crc32(data));
        this.deps.policy.onStored(key, ref.mount, ref.path);
      }
      result.loaded++;
      result.bytesLoaded += end - start;
      if (verify) result.verified++;
    };
    const run = async () => {
      while (next < pages.length) {
        const ref = checkRef(pages[next++]);
        try {
          await one(ref);
        } catch (err) {
          const e = err instanceof FanoutError ? err : new FanoutError('INTERNAL', (err as Error).message);
          result.failed.push({ path: `/${ref.mount}/${ref.path}`, index: ref.index, code: e.code, message: e.message });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LOAD_CONCURRENCY, pages.length) }, run));
    return result;
  }

  private async sweep(): Promise<void> {
    const expired = this.deps.policy.expired();
    if (expired.length === 0) return;
    for (const key of expired) await this.deps.store.delete(key);
    await this.deps.policy.forget(expired);
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new FanoutError('REQUEST_TOO_LARGE', `admin request body over ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
  } catch {
    throw new FanoutError('INVALID_ARGUMENT', 'admin request body must be JSON');
  }
  // null would crash the field reads below, and an array would lend them its methods ("keys").
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new FanoutError('INVALID_ARGUMENT', 'admin request body must be a JSON object');
  return body;
}

function checkKeys(keys: unknown): string[] {
  if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'string' || !/^[0-9a-f]{16,128}$/.test(k))) {
    throw new FanoutError('INVALID_ARGUMENT', '"keys" must be an array of page keys (hex)');
  }
  return keys as string[];
}

function checkRule(rule: unknown): { mount: string; prefix: string } {
  const r = rule as { mount?: unknown; prefix?: unknown };
  if (typeof r?.mount !== 'string' || typeof r.prefix !== 'string') throw new FanoutError('INVALID_ARGUMENT', '"rule" must be {mount, prefix}');
  return { mount: r.mount, prefix: r.prefix };
}

function checkRef(ref: unknown): PageRef {
  const r = ref as PageRef;
  const ok =
    typeof r?.mount === 'string' &&
    typeof r.path === 'string' &&
    typeof r.version === 'string' &&
    Number.isSafeInteger(r.size) &&
    Number.isSafeInteger(r.index) &&
    (r.hash === undefined || (typeof r.hash === 'string' && /^[0-9a-f]{64}$/.test(r.hash)));
  if (!ok) throw new FanoutError('INVALID_ARGUMENT', 'each page is {mount, path, version, size, index, hash?}');
  return { mount: r.mount, path: r.path, version: r.version, size: r.size, index: r.index, hash: r.hash };
}
