import { FanoutError } from '../core/errors.js';
import {
  ADMIN_BODIES,
  ROUTES,
  freeAnswerSchema,
  loadAnswerSchema,
  parseAnswer,
  pinAnswerSchema,
  ttlAnswerSchema,
  unpinAnswerSchema,
  type AdminLoad,
  type AdminTarget,
  type AdminTtl,
  type LoadAnswer,
} from '../lib/wire/index.js';
import type { FanoutClient } from './client.js';

type AdminPostRoute = keyof typeof ADMIN_BODIES;

/** Deadline of a load call that names none: the worker answers only when the whole batch is in. */
export const LOAD_DEADLINE_MS = 600_000;

/**
 * The workers' admin API, typed: bodies checked with the same schemas the worker uses (a bad
 * call fails here with INVALID_ARGUMENT, before any request), answers checked on the way back.
 * Each call goes to one worker (`base`, its URL) with the client's admin token; `fanout load`,
 * `free`, `pin` and `ttl` are loops over these. `timeoutMs` bounds the wait for the answer's
 * headers and each silence in its body; without it pin, unpin, free and ttl have the client's
 * peer deadlines (`timeouts.firstByteMs`, 30 s by default).
 */
export class AdminClient {
  constructor(private readonly client: FanoutClient) {}

  /**
   * Fetches pages into that worker's store (through its own page endpoint: single flight, owners).
   * The worker answers once every page is in, so the deadline is for the whole batch (default 10 min).
   */
  async load(base: string, body: AdminLoad, timeoutMs = LOAD_DEADLINE_MS): Promise<LoadAnswer> {
    return parseAnswer(loadAnswerSchema, await this.post(base, ROUTES.adminLoad, body, timeoutMs), `${base}${ROUTES.adminLoad}`);
  }

  async pin(base: string, target: AdminTarget, timeoutMs?: number): Promise<{ pinned: number; held: number }> {
    return parseAnswer(pinAnswerSchema, await this.post(base, ROUTES.adminPin, target, timeoutMs), `${base}${ROUTES.adminPin}`);
  }

  async unpin(base: string, target: AdminTarget, timeoutMs?: number): Promise<{ unpinned: number }> {
    return parseAnswer(unpinAnswerSchema, await this.post(base, ROUTES.adminUnpin, target, timeoutMs), `${base}${ROUTES.adminUnpin}`);
  }

  /** Deletes pages (and their pins and TTLs) from that worker. */
  async free(base: string, target: AdminTarget, timeoutMs?: number): Promise<{ freed: number }> {
    return parseAnswer(freeAnswerSchema, await this.post(base, ROUTES.adminFree, target, timeoutMs), `${base}${ROUTES.adminFree}`);
  }

  async ttl(base: string, body: AdminTtl, timeoutMs?: number): Promise<{ keys: number; ttlMs: number }> {
    return parseAnswer(ttlAnswerSchema, await this.post(base, ROUTES.adminTtl, body, timeoutMs), `${base}${ROUTES.adminTtl}`);
  }

  private post(base: string, route: AdminPostRoute, body: unknown, timeoutMs?: number): Promise<unknown> {
    const { schema, shape } = ADMIN_BODIES[route];
    const checked = schema.safeParse(body);
    if (!checked.success) {
      const issue = checked.error.issues[0];
      throw new FanoutError('INVALID_ARGUMENT', `${route} takes ${shape}: ${issue?.message ?? 'invalid body'}${issue?.path.length ? ` at ${issue.path.join('.')}` : ''}`);
    }
    return this.client.adminPost(base, route, body, timeoutMs);
  }
}
