import { readFile } from 'node:fs/promises';
import { availableParallelism, hostname } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { FanoutError } from '../../core/errors.js';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MIN_PAGE_SIZE, parseSize } from '../../core/pages.js';
import { isValidMountName } from '../../core/paths.js';
import { MIN_TOKEN_LENGTH, TOKEN_TEXT } from '../auth/tokens.js';

/**
 * Worker configuration: one schema, validated once at the edge, with every default here.
 * Sizes accept "4MiB"/"10GB"/bytes; durations accept "5s"/"250ms"/milliseconds.
 */
/** A size field ("64MiB", 1048576), parsed by parseSize; `check` may refuse a value parseSize took. */
const sizeOf = (check?: (value: number | string, bytes: number) => string | undefined) =>
  z.union([z.number(), z.string()]).transform((value, ctx) => {
    let bytes: number;
    try {
      bytes = parseSize(value);
    } catch (err) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message });
      return z.NEVER;
    }
    const problem = check?.(value, bytes);
    if (problem === undefined) return bytes;
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
    return z.NEVER;
  });

const size = sizeOf();

/**
 * A rate in bytes/s (a size): 0 means no limit, so a rate above 0 that is less than 1 byte/s
 * ("0.5", 0.9) is refused rather than floored to 0, which would lift the limit it asked for.
 */
const rate = sizeOf((value, bytes) =>
  bytes === 0 && Number(/[\d.]+/.exec(String(value))?.[0]) > 0 ? `a rate of ${JSON.stringify(value)} is less than 1 byte/s (0 means no limit)` : undefined,
);

/** The longest deadline a timer can hold: node fires a longer one at once (TimeoutOverflowWarning). */
const MAX_DURATION_MS = 2 ** 31 - 1;

const duration = z.union([z.number(), z.string()]).transform((value, ctx) => {
  let ms: number;
  if (typeof value === 'number') ms = value;
  else {
    const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
    if (!match) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid duration "${value}" (examples: 5s, 250ms)` });
      return z.NEVER;
    }
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? 'ms']!;
    ms = Math.round(Number(match[1]) * unit);
  }
  if (!(ms >= 0 && ms <= MAX_DURATION_MS)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid duration ${JSON.stringify(value)}: from 0 to ${MAX_DURATION_MS} ms (about 24 days)` });
    return z.NEVER;
  }
  return ms;
});

/** A datacenter label: what scoped release channels (prod@dc-b) name, so the same characters. */
export const DATACENTER_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const DATACENTER_MESSAGE = 'a datacenter is 1–63 of a-z 0-9 . _ - (starting with a letter or digit), e.g. dc-a';

const memberSchema = z.object({
  id: z.string().min(1),
  url: z.string().url(),
  capacity: size.default('10GiB'),
  /** The member's datacenter, as its own config says (shown in /v1/cluster). */
  datacenter: z.string().regex(DATACENTER_NAME, DATACENTER_MESSAGE).optional(),
});

export const s3OptionsSchema = z
  .object({
    endpoint: z.string().url().optional(),
    region: z.string().optional(),
    accessKeyId: z.string().optional(),
    secretAccessKey: z.string().optional(),
    forcePathStyle: z.boolean().optional(),
  })
  .strict();

/** PEM files of a server certificate and its key; re-read when they change on disk. */
const tlsFilesSchema = z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict();

/**
 * etcd over TLS: the CA that signed etcd's certificate, and a client certificate when etcd
 * runs with --client-cert-auth.
 */
const etcdTlsSchema = z
  .object({ ca: z.string().min(1), cert: z.string().min(1).optional(), key: z.string().min(1).optional() })
  .strict()
  .refine((t) => (t.cert === undefined) === (t.key === undefined), { message: 'give both cert and key for an etcd client certificate, or neither' });

/**
 * What an S3 access key id may be made of: printable ASCII without "/" (SigV4's credential scope
 * is split on it), ":" (SigV2's "AWS id:signature"), "," (SigV4's Authorization fields) or spaces.
 * Any other id could never authenticate.
 */
export const ACCESS_KEY_TEXT = /^[\x21-\x2b\x2d\x2e\x30-\x39\x3b-\x7e]+$/;
/** What ACCESS_KEY_TEXT asks, for the messages that refuse an id. */
export const ACCESS_KEY_RULE = 'printable ASCII without spaces, "/", ":" or "," (such an id could never authenticate)';

const gatewayCredentialsSchema = z
  .array(
    z
      .object({
        accessKeyId: z.string().min(1).regex(ACCESS_KEY_TEXT, `access key ids are ${ACCESS_KEY_RULE}`),
        secretAccessKey: z.string().min(1),
      })
      .strict(),
  )
  .superRefine((credentials, ctx) => {
    const seen = new Set<string>();
    credentials.forEach(({ accessKeyId }, i) => {
      // One id, one secret: with two, the gateway would take one and the other would never work.
      if (seen.has(accessKeyId)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [i, 'accessKeyId'], message: `access key id "${accessKeyId}" is given twice` });
      seen.add(accessKeyId);
    });
  });

/**
 * The S3-compatible gateway a worker serves on its own port (read-only). Off unless `listen` is
 * set; requests must be signed (SigV4) with one of `credentials` unless `anonymous` is true.
 */
export const gatewayConfigSchema = z
  .object({
    listen: z.string().optional(),
    region: z.string().min(1).default('us-east-1'),
    credentials: gatewayCredentialsSchema.default([]),
    anonymous: z.boolean().default(false),
    /** Its own certificate; without it the gateway serves HTTPS with the worker's `tls` pair, if any. */
    tls: tlsFilesSchema.optional(),
  })
  .strict()
  .refine((g) => !g.listen || g.anonymous || g.credentials.length > 0, {
    message: 'the gateway needs credentials (or anonymous: true), or it would refuse every request',
  });

const tokenString = z
  .string()
  .min(MIN_TOKEN_LENGTH, `tokens must be at least ${MIN_TOKEN_LENGTH} characters`)
  .regex(TOKEN_TEXT, 'tokens are printable ASCII without spaces (a token with a space or control character could never authenticate)');

/**
 * Tokens with roles for the HTTP API (Authorization: Bearer TOKEN): admin calls always need an
 * admin token; data reads need a read or admin token only with `readToken: true`. The cluster
 * secret lets workers prove to each other that they are peers (page fills, direct reads).
 * FANOUT_TOKEN and FANOUT_CLUSTER_SECRET in a daemon's environment add to this (see lib/auth).
 */
export const authConfigSchema = z
  .object({
    tokens: z.array(z.object({ token: tokenString, role: z.enum(['read', 'admin']) }).strict()).default([]),
    readToken: z.boolean().default(false),
    clusterSecret: z.string().min(16, 'clusterSecret must be at least 16 characters').optional(),
    /**
     * Refused credentials (unknown tokens on the API and the dashboard, wrong S3 signatures and
     * unknown access keys on the gateway) one client address may give within `window`; past
     * `max`, its credentials are refused unchecked (429 TOO_MANY_ATTEMPTS, S3 503 SlowDown, with
     * Retry-After) until the window ends. At most `clients` addresses are remembered (the oldest
     * forgotten). `max: 0` turns the limit off.
     */
    attempts: z
      .object({
        max: z.number().int().min(0).default(20),
        window: duration.refine((v) => v >= 1, { message: 'auth.attempts.window must be at least 1ms' }).default('1m'),
        clients: z.number().int().min(1).max(1_000_000).default(10_000),
      })
      .strict()
      .default({}),
  })
  .strict();

/**
 * Resource bounds that hold whatever clients do. Defaults need no tuning: a worker serves
 * 1024 connections, a client that takes no byte for a minute is cut, a mount's source has at
 * most 8 page reads in flight on a worker, and responses hold at most 128 MiB of page buffers.
 */
export const limitsSchema = z
  .object({
    /** Open connections per port (HTTP API, S3 gateway); beyond it: 503 OVERLOADED / SlowDown. */
    maxConnections: z.number().int().min(1).default(1024),
    /** A response whose client takes no byte for this long is destroyed; also the idle keep-alive and header deadline. */
    clientIdle: duration.refine((v) => v >= 100, { message: 'clientIdle must be at least 100ms' }).default('60s'),
    /** Page reads from one mount's source (or its peers) in flight on this worker, in whole pages: a page smaller than 1/8 of the page size counts as 1/8. */
    fillsPerMount: z.number().int().min(1).default(8),
    /** Page buffers lent to responses at once (hits and /v1/data pages). */
    responseMemory: size.refine((v) => v >= 1024 * 1024, { message: 'responseMemory must be at least 1MiB' }).default('128MiB'),
    /** Entries one directory listing of a source may gather (S3: keys and common prefixes of every page); past it SOURCE_ERROR. */
    sourceListEntries: z.number().int().min(1).default(1_000_000),
    /**
     * Directory listings of the sources running at once on this worker (all mounts, the HTTP API
     * and the S3 gateway; requests for a directory being listed share its listing). Each may hold
     * a source connection and its entries for up to timeouts.sourceList.
     */
    sourceListings: z.number().int().min(1).default(8),
    /** Listings that may wait (at most 30 s) for one of those; beyond: 503 OVERLOADED with Retry-After. */
    sourceListingsQueued: z.number().int().min(0).default(32),
  })
  .strict();

export const workerConfigSchema = z
  .object({
    id: z.string().min(1).optional(),
    /** host:port the HTTP API listens on. */
    listen: z.string().default('127.0.0.1:7450'),
    /** URL other members and clients use to reach this worker; defaults to http://listen (https:// with tls). */
    advertiseUrl: z.string().url().optional(),
    /**
     * The datacenter this worker runs in (e.g. dc-a): shown in /v1/status, /v1/cluster and the
     * fanout_worker_info metric, so status and releases can group hosts by datacenter.
     */
    datacenter: z.string().regex(DATACENTER_NAME, DATACENTER_MESSAGE).optional(),
    /**
     * HTTPS for the API (and the S3 gateway): certificate and key files, reloaded on change.
     * `ca` is what this worker trusts when it fetches pages from peers (default: the system store).
     */
    tls: tlsFilesSchema.extend({ ca: z.string().min(1).optional() }).strict().optional(),
    dataDir: z.string().default(defaultDataDir()),
    /** What the page store may take on disk: pages count in whole file-system blocks (pagestore/capacity.ts). */
    capacity: size.default('10GiB'),
    pageSize: size.default(DEFAULT_PAGE_SIZE).refine((v) => v >= MIN_PAGE_SIZE && v <= MAX_PAGE_SIZE, {
      message: 'pageSize must be between 1MiB and 64MiB',
    }),
    watermarks: z
      .object({ high: z.number().gt(0).lte(1).default(0.95), low: z.number().gt(0).lte(1).default(0.85) })
      .refine((w) => w.low <= w.high, { message: 'watermarks.low must not exceed watermarks.high' })
      .default({}),
    /**
     * NAME: URI, or NAME: { uri, sourceRate, versioning } to give one mount its own cluster-wide
     * budget, or to accept an HTTP source without strong ETags (versioning: weak, see ufs/versioning.ts).
     */
    mounts: z
      .record(
        z.string(),
        z.union([
          z.string().min(1),
          z
            .object({
              uri: z.string().min(1),
              sourceRate: rate.optional(),
              versioning: z.enum(['strict', 'weak']).optional(),
              line: z.string().min(1).optional(),
              // fanout:// sources: the remote cluster's read token and CA file (default: FANOUT_TOKEN, FANOUT_CA).
              token: z.string().min(1).optional(),
              ca: z.string().min(1).optional(),
            })
            .strict()
            .refine((m) => m.line === undefined || m.sourceRate === undefined, { message: 'a mount crosses either a named line or its own sourceRate, not both' }),
        ]),
      )
      .refine((m) => Object.keys(m).every(isValidMountName), { message: 'mount names must match [a-z0-9][a-z0-9._-]*' })
      .default({}),
    s3: s3OptionsSchema.default({}),
    membership: z
      .object({
        static: z.array(memberSchema).optional(),
        etcd: z
          .object({
            endpoints: z.array(z.string().url()).min(1),
            prefix: z.string().default('/fanout/default/members/'),
            leaseTtlSeconds: z.number().int().min(1).default(10),
            tls: etcdTlsSchema.optional(),
            auth: z.object({ username: z.string().min(1), password: z.string() }).strict().optional(),
          })
          .optional(),
      })
      .default({}),
    /** Copies of each page the cluster aims to hold (the first R ring owners). */
    replication: z.number().int().min(1).max(8).default(1),
    /**
     * Cluster-wide budget of bytes/s read from each mount's source, shared by the live members
     * (each takes budget ÷ members, re-split on membership changes); 0 = unlimited.
     */
    sourceRate: rate.default(0),
    /**
     * Named lines (links whose bandwidth is the scarce thing): NAME: { rate, preloadFloor }. The
     * rate is for the whole cluster, leased to the workers by demand (reads first, preloads take
     * what is left but at least preloadFloor, default a tenth of the rate). A mount says
     * `line: NAME`; several may share one.
     */
    lines: z
      .record(z.string(), z.object({ rate: rate.refine((v) => v > 0, { message: 'a line needs a rate above 0' }), preloadFloor: rate.optional() }).strict())
      .refine((l) => Object.keys(l).every(isValidMountName), { message: 'line names must match [a-z0-9][a-z0-9._-]*' })
      .default({}),
    /** Cap on bytes/s this worker reads from all sources together; 0 = unlimited. */
    workerSourceRate: rate.default(0),
    /**
     * Deadlines of every source request (read, stat, list): connecting, the first byte of an
     * answer, and progress while a body streams (see ufs/deadlines.ts). A timeout is SOURCE_ERROR.
     */
    timeouts: z
      .object({
        sourceConnect: duration.default('5s'),
        sourceFirstByte: duration.default('30s'),
        sourceIdle: duration.default('30s'),
        // A whole directory listing, every page together (an S3 server may hand out pages for ever).
        sourceList: duration.default('10m'),
        // Page requests to other workers (connecting, until the response headers, silence
        // between body chunks); a timeout counts as the peer being unavailable.
        peerConnect: duration.default('5s'),
        peerFirstByte: duration.default('30s'),
        peerIdle: duration.default('30s'),
        // How long a peer's `102 Processing` heads ("filling the page", one each 5 s) may keep a
        // page request of this worker waiting for the answer's head; each restarts peerFirstByte
        // within it. Past it a relay reads around the owner (the source), as around a hung one.
        // An owner sends its head with the page's first byte from the source: what a legit 102
        // stands for is its queue for a fill slot (limits.fillsPerMount per mount), the source's
        // connect and first byte (sourceConnect + sourceFirstByte, 35 s at most) and the line's
        // budget for that first chunk. With sources of tens of MB/s a 4 MiB page reads in well
        // under a second, so a queue of 8 fills clears in seconds, and a burst of a thousand cold
        // pages on one owner in about a minute: 2 min leaves both room. Raise it for sources or
        // lines so slow that pages queue longer (pages ahead ÷ fillsPerMount × one page's read
        // time): a relay that gives up reads the page from the source a second time. Before, the
        // bound was fixed at 10 min (a hostile or stuck peer held each relay that long).
        peerFilling: duration.default('2m'),
      })
      .strict()
      .default({}),
    /** How long a stat or listing is reused before asking the source again. */
    statTtl: duration.default('2s'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** S3-compatible gateway (read-only); see gatewayConfigSchema. */
    gateway: gatewayConfigSchema.default({}),
    /** Who may call what; see authConfigSchema. */
    auth: authConfigSchema.default({}),
    /** What clients may take of this worker, whatever they do; see limitsSchema. */
    limits: limitsSchema.default({}),
    /** Cached pages sent by the kernel at once, each on a thread of its own (default: the number of cores). */
    threads: z.number().int().min(1).max(1024).default(() => availableParallelism()),
    /**
     * Background re-verification of stored pages (lib/pagestore/scrub.ts): `rate` in bytes/s
     * ("16MB/s"), 0 or "off" disables. The default reads a 1 TB store in about 18 hours for
     * well under 1% of a core.
     */
    scrub: z
      .object({ rate: z.union([z.literal('off').transform(() => 0), rate]).default('16MB/s') })
      .strict()
      .default({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (const [name, mount] of Object.entries(c.mounts)) {
      if (typeof mount === 'object' && mount.line !== undefined && !(mount.line in c.lines)) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['mounts', name, 'line'], message: `no line named "${mount.line}" (lines: ${Object.keys(c.lines).join(', ') || 'none'})` });
      }
    }
  });

export type WorkerConfigInput = z.input<typeof workerConfigSchema>;
export type WorkerConfig = z.output<typeof workerConfigSchema> & { id: string; advertiseUrl: string };

/**
 * A mount's source URI, its cluster-wide source budget (bytes/s, 0 = unlimited; a mount on a named
 * line has none of its own), the line it crosses, versioning (undefined: the source's default),
 * and, for fanout:// sources, the remote cluster's token and CA file.
 */
export function mountSpec(config: WorkerConfig, name: string): { uri: string; sourceRate: number; line?: string; versioning?: 'strict' | 'weak'; token?: string; ca?: string } {
  const mount = config.mounts[name]!;
  if (typeof mount === 'string') return { uri: mount, sourceRate: config.sourceRate };
  const { uri, versioning, token, ca } = mount;
  if (mount.line !== undefined) return { uri, sourceRate: 0, line: mount.line, versioning, token, ca };
  return { uri, sourceRate: mount.sourceRate ?? config.sourceRate, versioning, token, ca };
}

export function parseWorkerConfig(input: unknown): WorkerConfig {
  const result = workerConfigSchema.safeParse(input ?? {});
  if (!result.success) {
    const details = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new FanoutError('INVALID_CONFIG', `invalid worker configuration: ${details}`);
  }
  const config = result.data;
  const advertiseUrl = config.advertiseUrl ?? `${config.tls ? 'https' : 'http'}://${config.listen}`;
  const id = config.id ?? `${hostname()}:${new URL(advertiseUrl).port || (config.tls ? '443' : '80')}`;
  return { ...config, id, advertiseUrl };
}

export async function loadWorkerConfig(file: string, overrides: Record<string, unknown> = {}): Promise<WorkerConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new FanoutError('INVALID_CONFIG', `cannot read config ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text) ?? {};
  } catch (err) {
    throw new FanoutError('INVALID_CONFIG', `config ${file} is not valid YAML: ${(err as Error).message}`);
  }
  return parseWorkerConfig({ ...(parsed as object), ...overrides });
}

export function parseListen(listen: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(listen);
  if (!match) throw new FanoutError('INVALID_CONFIG', `listen must be host:port, got "${listen}"`);
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port: Number(match[3]) };
}

/** FANOUT_DATA_DIR, else ./.fanout beside where fanout was started. */
function defaultDataDir(): string {
  return process.env.FANOUT_DATA_DIR ?? join(process.cwd(), '.fanout');
}

/** Size ("4MiB") and duration ("2s") fields, for other configurations validated at their edge. */
export { size as sizeSchema, duration as durationSchema };
