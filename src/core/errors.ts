/**
 * Errors with a stable `code` that users and HTTP clients can branch on, and the HTTP status
 * a worker answers with. Every module translates foreign errors (fs, AWS SDK, undici) into
 * these at its edge.
 */
export const ErrorCodes = {
  INVALID_PATH: 400,
  INVALID_ARGUMENT: 400,
  INVALID_RANGE: 400,
  INVALID_CONFIG: 400,
  /**
   * The mount's source cannot list directories (an HTTP origin): listings fail with this code
   * and nothing else does, so the mount, the gateway and a cluster over this one can tell "no
   * listing here" from a listing request that is wrong.
   */
  NOT_LISTABLE: 400,
  /** No credential, or one the worker does not know (Authorization: Bearer TOKEN). */
  UNAUTHENTICATED: 401,
  /**
   * A known credential whose role does not allow the call (a read token on an admin route), or a
   * request no credential would open: a peer-only header from a non-peer, a Host that is not a
   * loopback name on a worker listening on loopback only (DNS rebinding, lib/http/loopback.ts).
   */
  FORBIDDEN: 403,
  /**
   * This client address gave too many refused credentials (unknown tokens, wrong S3 signatures)
   * within auth.attempts.window: every credential it sends is refused unchecked until the window
   * ends (Retry-After says when). Not the worker's fault, and another worker's answer says nothing
   * of this one's table: not failed over, the worker not marked down.
   */
  TOO_MANY_ATTEMPTS: 429,
  UNKNOWN_MOUNT: 404,
  NOT_FOUND: 404,
  IS_A_DIRECTORY: 400,
  NOT_A_DIRECTORY: 400,
  RANGE_NOT_SATISFIABLE: 416,
  REQUEST_TOO_LARGE: 413,
  /** The source file is no longer at the version the request asked for. */
  SOURCE_CHANGED: 412,
  SOURCE_ERROR: 502,
  SOURCE_TRUNCATED: 502,
  /** The source offers only weak validators (no ETag) and the mount's versioning is strict. */
  SOURCE_UNVERSIONED: 409,
  /**
   * A page request made for another page size than the worker's: every worker of a cluster must
   * have the same pageSize (a page's index means another span of the file under another size).
   */
  PAGE_SIZE_MISMATCH: 409,
  CHECKSUM_MISMATCH: 502,
  WORKER_UNAVAILABLE: 503,
  NO_WORKERS: 503,
  /** The worker is at a limit (connections, fills in flight); retry later or elsewhere. */
  OVERLOADED: 503,
  ABORTED: 499,
  STORE_FULL: 507,
  /** Releases: a published version is immutable; publishing it again fails. */
  RELEASE_EXISTS: 409,
  /** An exclusive create found something already there. */
  ALREADY_EXISTS: 409,
  RELEASE_NOT_FOUND: 404,
  CHANNEL_NOT_FOUND: 404,
  /** A channel moved between reading it and writing it (compare-and-swap lost). */
  PROMOTION_CONFLICT: 409,
  /** A manifest that fails validation or does not match its recorded digest. */
  MANIFEST_INVALID: 422,
  /**
   * `release publish` of a tree with entries a release cannot carry (a name that is not UTF-8, a
   * dangling symlink, a FIFO...): left out, they would be missing on every host, unsaid.
   */
  UNPUBLISHABLE_ENTRIES: 422,
  /** Release data whose content hash differs from the manifest. */
  HASH_MISMATCH: 502,
  ETCD_UNAVAILABLE: 503,
  /**
   * etcd answered, but refuses every write: its NOSPACE alarm is raised (its database reached
   * `--quota-backend-bytes`). Reads and lease renewals still work; an operator must free space and
   * disarm the alarm, so retrying alone never helps (unlike ETCD_UNAVAILABLE).
   */
  ETCD_FULL: 507,
  /** A staged rollout stopped: a host of the wave failed on the new version, or none could be tested. */
  ROLLOUT_FAILED: 409,
  /** A staged rollout stopped: the wave's hosts did not all switch within --timeout. */
  ROLLOUT_TIMEOUT: 504,
  DISK_FULL: 507,
  /** Another live sync agent holds the release directory (one agent per directory). */
  DIR_IN_USE: 409,
  RECORD_INVALID: 500,
  /**
   * Files of the version a sync agent serves (DIR/current) no longer match its manifest: deleted,
   * truncated, edited or replaced by another program. Reported by the agent (repaired, or not
   * with `--no-repair`), never thrown to a caller.
   */
  RELEASE_DAMAGED: 500,
  /** Another live sync agent reports under the same host id for another directory (`sync --host`). */
  HOST_IN_USE: 409,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class FanoutError extends Error {
  override readonly name = 'FanoutError';
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.status = ErrorCodes[code];
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isFanoutError(err: unknown, code?: ErrorCode): err is FanoutError {
  return err instanceof FanoutError && (code === undefined || err.code === code);
}

/**
 * Rebuilds a FanoutError from a worker's JSON error body. An answer without one of fanout's codes
 * did not come from a fanout worker (a proxy's redirect or 404 page, another server at a member's
 * URL): WORKER_UNAVAILABLE, whatever its status, so that the caller reads the page elsewhere
 * rather than failing the read as if the worker had refused it.
 */
export function errorFromJSON(body: unknown, fallbackStatus: number): FanoutError {
  const obj = (body ?? {}) as { error?: { code?: string; message?: string } };
  const code = obj.error?.code;
  if (code && code in ErrorCodes) return new FanoutError(code as ErrorCode, obj.error?.message ?? `worker answered HTTP ${fallbackStatus}`);
  return new FanoutError('WORKER_UNAVAILABLE', obj.error?.message ?? `answered HTTP ${fallbackStatus} without a fanout error code (not a fanout worker, or a proxy in between)`);
}

/** How an out-of-descriptors error names its process, its limit and what comes next. */
export interface DescriptorShortageWording {
  /** The process at its limit: "this worker" unless told. */
  who?: string;
  /** Its open-file limit, where the caller read it beforehand (reading it needs a descriptor). */
  limit?: number;
  /** What happens now: "retry shortly" unless told. */
  then?: string;
}

/**
 * EMFILE or ENFILE: the process (or the whole system) has no file descriptor left. That is the
 * process at a limit, not its source or its store failing: OVERLOADED (503, Retry-After), which a
 * reader takes to another worker and an S3 client retries (SlowDown). Before, a source open that
 * met it was SOURCE_ERROR "/data/f4.bin: EMFILE" (502, which a reader passes to its caller as the
 * source's fault), and a page file's open INTERNAL (500) with a stack in the log.
 */
export function outOfDescriptors(err: unknown, what: string, wording: DescriptorShortageWording = {}): FanoutError | undefined {
  const code = descriptorShortage(err);
  if (code === undefined) return undefined;
  const { who = 'this worker', limit, then = 'retry shortly' } = wording;
  const why =
    code === 'EMFILE'
      ? `${who} has no file descriptor left (EMFILE: its open-file limit, ulimit -n or LimitNOFILE, is ${limit ?? 'reached'})`
      : "the host has no file descriptor left (ENFILE: the system's open-file table is full)";
  return new FanoutError('OVERLOADED', `${what ? `${what}: ` : ''}${why}; ${then}`, { cause: err });
}

/**
 * EMFILE or ENFILE in an error or what it wraps (an SDK's errors wrap undici's, which wrap the
 * socket's): the process or the host out of descriptors, whatever layer reported it.
 */
export function descriptorShortage(err: unknown): 'EMFILE' | 'ENFILE' | undefined {
  let at = err as { code?: unknown; cause?: unknown } | undefined;
  for (let depth = 0; at && depth < 6; depth++) {
    if (at.code === 'EMFILE' || at.code === 'ENFILE') return at.code;
    at = at.cause as typeof at;
  }
  return undefined;
}

export function abortError(signal?: AbortSignal): FanoutError {
  const reason = signal?.reason;
  if (reason instanceof FanoutError) return reason;
  return new FanoutError('ABORTED', 'operation aborted', { cause: reason });
}
