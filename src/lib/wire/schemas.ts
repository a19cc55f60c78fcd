import { z } from 'zod';
import { FanoutError } from '../../core/errors.js';
import { BATCH_LIMITS } from './batch.js';
import { MAX_MEMBERS } from './check.js';

/*
 * Bodies of the worker's API, as zod schemas used on both sides: the worker checks admin bodies
 * at its edge with them, and the SDK checks the answers it builds on (/v1/cluster, /v1/status)
 * so a wrong or foreign server fails with a clear error instead of an undefined deep inside.
 * Objects are not strict: unknown fields are ignored, so older and newer peers keep working.
 */

export const memberSchema = z.object({
  id: z.string().min(1),
  url: z.string().min(1),
  capacity: z.number().nonnegative(),
  datacenter: z.string().optional(),
});

/** GET /v1/cluster */
export const clusterInfoSchema = z.object({
  self: z.string(),
  pageSize: z.number().int().positive(),
  replication: z.number().int().positive(),
  statTtlMs: z.number().nonnegative(),
  members: z
    .array(memberSchema)
    .max(MAX_MEMBERS)
    .refine((members) => new Set(members.map((m) => m.id)).size === members.length, { message: 'a member id twice' }),
  stale: z.boolean(),
  mounts: z.array(z.string()),
  /** Same for every worker of one cluster (worker/clusterid.ts); absent from older workers. */
  clusterId: z.string().optional(),
  /** Clusters this one reads through its fanout:// sources, directly or down a chain (loop check). */
  upstream: z.array(z.string()).optional(),
  /**
   * Where the answering worker stands in its membership, a MembershipState (absent from older
   * workers). Any string: a state added later must not make older clients refuse the answer.
   */
  membership: z.string().optional(),
});
export type ClusterInfoBody = z.infer<typeof clusterInfoSchema>;

/** GET /v1/status */
export const workerStatusSchema = z.object({
  id: z.string(),
  url: z.string(),
  datacenter: z.string().optional(),
  capacity: z.number(),
  configuredCapacity: z.number().optional(),
  /** What the store's pages take on disk (whole file-system blocks): what `capacity` counts. */
  used: z.number(),
  /** Bytes of the pages themselves (absent from workers before it was added). */
  pageBytes: z.number().optional(),
  pages: z.number(),
  hits: z.number(),
  misses: z.number(),
  bytesServed: z.number(),
  bytesFromSource: z.number(),
  evictions: z.number(),
  inflightSourceReads: z.number(),
  sourceRates: z.record(z.string(), z.number()),
  lines: z
    .array(
      z.object({
        line: z.string(),
        rate: z.number(),
        preloadFloor: z.number(),
        share: z.number(),
        preloadMin: z.number(),
        mode: z.enum(['lease', 'fallback', 'starting', 'out-of-ring']),
        coordinator: z.string().optional(),
        mounts: z.array(z.string()),
        used: z.object({ read: z.number(), preload: z.number() }),
        queue: z.object({ read: z.object({ requests: z.number(), bytes: z.number() }), preload: z.object({ requests: z.number(), bytes: z.number() }) }),
      }),
    )
    .optional(),
  sendPath: z.enum(['sendfile', 'js']).optional(),
  checksumPath: z.enum(['vclmul', 'clmul', 'table', 'js']).optional(),
  memoryPath: z.enum(['huge', 'js']).optional(),
  membership: z
    .object({
      state: z.enum(['static', 'starting', 'registered', 'registering', 'id-taken']),
      stale: z.boolean(),
      heldBy: z.object({ url: z.string(), since: z.string() }).optional(),
      ignored: z.array(z.object({ key: z.string(), id: z.string(), url: z.string(), reason: z.enum(['no-lease']) })).max(MAX_MEMBERS),
    })
    .optional(),
});

/** Slowest preload rate a caller may ask for (bytes/s). */
export const MIN_LOAD_RATE = 64 * 1024;

const pageKeySchema = z.string().regex(/^[0-9a-f]{16,128}$/, 'a page key is 16–128 lowercase hex digits');
const ruleSchema = z.object({ mount: z.string().min(1).max(256), prefix: z.string().max(4096) });
const NAMES_SOMETHING = { message: 'give "keys" (page keys) and/or "rule" ({mount, prefix})' };

/** POST /v1/admin/pin, /unpin, /free */
export const adminTargetSchema = z
  .object({ keys: z.array(pageKeySchema).optional(), rule: ruleSchema.optional() })
  .refine((t) => (t.keys?.length ?? 0) > 0 || t.rule !== undefined, NAMES_SOMETHING);

/** POST /v1/admin/ttl */
export const adminTtlSchema = z
  .object({ keys: z.array(pageKeySchema).optional(), rule: ruleSchema.optional(), ttlMs: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) })
  .refine((t) => (t.keys?.length ?? 0) > 0 || t.rule !== undefined, NAMES_SOMETHING);

export const pageRefSchema = z.object({
  mount: z.string().min(1).max(256),
  path: z.string().max(4096),
  version: z.string().max(1024),
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  index: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  hash: z.string().regex(/^[0-9a-f]{64}$/, 'hash is a SHA-256 in hex').optional(),
});

/** POST /v1/admin/load */
export const adminLoadSchema = z.object({
  pages: z.array(pageRefSchema),
  verify: z.boolean().optional(),
  // 0 = unlimited; below 64 KiB/s one 4 MiB page takes over a minute, which no caller means.
  rate: z
    .number()
    .min(0)
    .max(Number.MAX_SAFE_INTEGER)
    .refine((r) => r === 0 || r >= MIN_LOAD_RATE, { message: `rate must be 0 (unlimited) or at least ${MIN_LOAD_RATE} bytes/s` })
    .optional(),
  /** The page size the pages' indexes count in (PAGE_QUERY.pageSize): optional, as on /v1/page. */
  pageSize: z.number().int().positive().optional(),
});

export type AdminTarget = z.infer<typeof adminTargetSchema>;
export type AdminTtl = z.infer<typeof adminTtlSchema>;
export type AdminLoad = z.infer<typeof adminLoadSchema>;

/** Admin routes with their body schema and the shape named in a refusal. */
export const ADMIN_BODIES = {
  '/v1/admin/load': { schema: adminLoadSchema, shape: '{pages: [{mount, path, version, size, index, hash?}], verify?, rate?, pageSize?}' },
  '/v1/admin/pin': { schema: adminTargetSchema, shape: '{keys?: [page key], rule?: {mount, prefix}}' },
  '/v1/admin/unpin': { schema: adminTargetSchema, shape: '{keys?: [page key], rule?: {mount, prefix}}' },
  '/v1/admin/free': { schema: adminTargetSchema, shape: '{keys?: [page key], rule?: {mount, prefix}}' },
  '/v1/admin/ttl': { schema: adminTtlSchema, shape: '{keys?: [page key], rule?: {mount, prefix}, ttlMs}' },
} as const;

/**
 * An answer from a worker checked against its schema. A body that does not fit is the worker's
 * fault (or not a fanout worker at all): WORKER_UNAVAILABLE naming the route and the first problem.
 */
export function parseAnswer<T extends z.ZodTypeAny>(schema: T, body: unknown, what: string): z.infer<T> {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue?.path.length ? ` at ${issue.path.join('.')}` : '';
  throw new FanoutError('WORKER_UNAVAILABLE', `${what}: not a fanout answer (${issue?.message ?? 'invalid'}${where})`);
}

/* Answers of the admin routes (what the typed admin client returns). */
export const loadAnswerSchema = z.object({
  present: z.number(),
  loaded: z.number(),
  bytesLoaded: z.number(),
  verified: z.number(),
  failed: z.array(z.object({ path: z.string(), index: z.number(), code: z.string(), message: z.string() })),
});
export const pinAnswerSchema = z.object({ pinned: z.number(), held: z.number() });
export const unpinAnswerSchema = z.object({ unpinned: z.number() });
export const ttlAnswerSchema = z.object({ keys: z.number(), ttlMs: z.number() });
export const freeAnswerSchema = z.object({ freed: z.number() });
export type LoadAnswer = z.infer<typeof loadAnswerSchema>;

/** The body of POST /v1/pages (batch.ts frames the answer; the schema lives here so the SDK's batch reader loads no zod). */
export const batchRequestSchema = z.object({
  items: z.array(pageRefSchema).min(1).max(BATCH_LIMITS.maxItems),
  /** The page size the items' indexes count in (PAGE_QUERY.pageSize): optional, as on /v1/page. */
  pageSize: z.number().int().positive().optional(),
});
export type BatchRequest = z.infer<typeof batchRequestSchema>;
