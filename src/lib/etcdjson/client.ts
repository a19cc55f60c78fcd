import { FanoutError } from '../../core/errors.js';
import { bodyText, ConnectionPool } from '../leanhttp/index.js';
import { DEFAULT_ETCD_TIMEOUT_MS, readPem, type EtcdConnection } from '../membership/connection.js';
import type { EndpointPreference } from '../membership/endpoints.js';
import { sharedEndpointPreference } from '../membership/preferences.js';

/**
 * etcd's own JSON gateway (the v3 API as HTTP POSTs of JSON, served on the client port by every
 * etcd since 3.3; keys and values in base64, 64-bit numbers as strings), for the release index's
 * reads and writes. Why not etcd3 (gRPC) as the membership: loading etcd3 with gRPC and protobufjs
 * costs a one-shot command 0.11–0.12 s of CPU (docs/benchmarks.md), a tenth of a `fanout sync
 * --once` of 2,000 small files, for the three or four requests it makes. Watches are the one thing
 * this does not do (a watch is a long-lived stream): the release index opens them with etcd3.
 *
 * Requests go over the lean HTTP/1.1 client (keep-alive, a deadline per phase and one for the
 * whole request), to the endpoint that answered last, and on to the next when one gives no answer
 * (refused, reset, or silent past the deadline); one silent past the deadline is asked last for a
 * while (EndpointPreference: the process's one for these endpoints, shared with the gRPC client
 * and started from what earlier processes learned). Every request here may be sent twice (see
 * `send`). With a user and password, the
 * token etcd gives for them is sent with each request and asked for again when etcd says it
 * expired.
 */

export interface KeyValue {
  key: string;
  value: string;
  createRevision: string;
  modRevision: string;
}

/** One condition of a transaction: the key's create or mod revision equal to (or greater than) `revision`. */
export interface Compare {
  key: string;
  target: 'CREATE' | 'MOD';
  result: 'EQUAL' | 'GREATER';
  revision: string;
}

/** An answer etcd gave with a gRPC status code (3 invalid argument, 5 not found, 16 unauthenticated…). */
export class EtcdError extends Error {
  constructor(
    message: string,
    readonly grpcCode: number,
  ) {
    super(message);
  }
}

/** Largest answer read (a prefix listing of every release's keys fits many times over). */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;
/** A connection refused or not made in time: the request never left, so sending it to the next endpoint is no resend. */
const NOT_SENT = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'FANOUT_CONNECT_TIMEOUT']);
/** Failures that took the whole deadline (no connection, no answer, a stall): the endpoint cools down. */
const SILENT = new Set(['FANOUT_CONNECT_TIMEOUT', 'FANOUT_FIRST_BYTE_TIMEOUT', 'FANOUT_IDLE_TIMEOUT']);
const GRPC_UNAUTHENTICATED = 16;

export class EtcdJsonClient {
  private readonly pools: ConnectionPool[];
  private readonly preference: EndpointPreference;
  private token: Promise<string> | undefined;

  constructor(
    private readonly connection: EtcdConnection,
    private readonly timeoutMs = DEFAULT_ETCD_TIMEOUT_MS,
    /** Default: the process's one for these endpoints, which the gRPC client shares. */
    preference?: EndpointPreference,
  ) {
    if (connection.endpoints.length === 0) throw new FanoutError('INVALID_CONFIG', 'etcd needs at least one endpoint');
    const { tls } = connection;
    const secure = tls
      ? { ca: readPem(tls.ca, 'CA'), ...(tls.cert && tls.key ? { cert: readPem(tls.cert, 'client certificate'), key: readPem(tls.key, 'client key') } : {}) }
      : undefined;
    const timeouts = { connectMs: timeoutMs, firstByteMs: timeoutMs, idleMs: timeoutMs };
    this.preference = preference ?? sharedEndpointPreference(connection.endpoints);
    this.pools = connection.endpoints.map((endpoint) => new ConnectionPool(new URL(endpoint).origin, { connections: 4, timeouts, tls: secure }));
  }

  /** The key's value, or null. */
  async get(key: string): Promise<KeyValue | null> {
    return (await this.range({ key: b64(key) }))[0] ?? null;
  }

  /** Every key starting with `prefix`, in key order. */
  async getPrefix(prefix: string): Promise<KeyValue[]> {
    return this.range({ key: b64(prefix), range_end: prefixEnd(prefix) });
  }

  /** Writes `value` at `key` (under `lease` when given: gone when the lease is). */
  async put(key: string, value: string, lease?: string): Promise<void> {
    await this.call('/v3/kv/put', { key: b64(key), value: b64(value), ...(lease ? { lease } : {}) });
  }

  /** Writes `value` at `key` (under `lease` when given) if every comparison holds; whether it did. */
  async putIf(compares: Compare[], key: string, value: string, lease?: string): Promise<boolean> {
    const compare = compares.map((c) => ({
      key: b64(c.key),
      target: c.target,
      result: c.result,
      [c.target === 'CREATE' ? 'create_revision' : 'mod_revision']: c.revision,
    }));
    const { answer, resent } = await this.send<{ succeeded?: boolean; responses?: { response_range?: { kvs?: { value?: string }[] } }[] }>('/v3/kv/txn', {
      compare,
      success: [{ request_put: { key: b64(key), value: b64(value), ...(lease ? { lease } : {}) } }],
      failure: [{ request_range: { key: b64(key) } }],
    });
    if (answer.succeeded === true) return true;
    // Sent again after an endpoint gave no answer, the first try may have been applied: then the
    // guard fails on our own write. The key holding exactly this value (our records carry their
    // own timestamp) says it was.
    const held = answer.responses?.[0]?.response_range?.kvs?.[0];
    return resent && held !== undefined && unb64(held.value ?? '') === value;
  }

  /**
   * A new lease of `ttlSeconds`; its id. Sent again after no answer, a first grant etcd did make
   * is never used: with no key under it, it expires after `ttlSeconds` and nothing notices.
   */
  async grantLease(ttlSeconds: number): Promise<string> {
    const answer = await this.call<{ ID?: string; error?: string }>('/v3/lease/grant', { TTL: ttlSeconds });
    if (answer.error || !answer.ID) throw new EtcdError(`etcd granted no lease: ${answer.error ?? 'no id'}`, 0);
    return answer.ID;
  }

  /** Renews the lease; the seconds it has left (0: it had expired). */
  async keepAlive(lease: string): Promise<number> {
    // A stream in gRPC: the gateway answers one renewal per request message, wrapped in `result`.
    const answer = await this.call<{ result?: { TTL?: string }; error?: { message?: string } }>('/v3/lease/keepalive', { ID: lease });
    if (answer.error) throw new EtcdError(`etcd did not renew the lease: ${answer.error.message ?? 'error'}`, 0);
    return Number(answer.result?.TTL ?? 0);
  }

  close(): void {
    for (const pool of this.pools) pool.destroy();
  }

  private async range(body: Record<string, string>): Promise<KeyValue[]> {
    const answer = await this.call<{ kvs?: { key: string; value?: string; create_revision: string; mod_revision: string }[] }>('/v3/kv/range', body);
    return (answer.kvs ?? []).map((kv) => ({ key: unb64(kv.key), value: unb64(kv.value ?? ''), createRevision: kv.create_revision, modRevision: kv.mod_revision }));
  }

  private async call<T>(path: string, body: object): Promise<T> {
    return (await this.send<T>(path, body)).answer;
  }

  /**
   * POSTs `body` as JSON and parses the answer; with a password, once more with a fresh token if
   * etcd says the one sent expired. `resent`: an endpoint gave no answer, so etcd may have applied
   * the request before the answer that came. That is harmless for what this client sends: reads,
   * plain puts and renewals are idempotent, a lease grant leaves at worst an unused lease that
   * expires, and putIf checks its outcome.
   */
  private async send<T>(path: string, body: object): Promise<{ answer: T; resent: boolean }> {
    const payload = Buffer.from(JSON.stringify(body));
    if (!this.connection.auth) return this.post<T>(path, payload, undefined);
    const token = await this.authToken();
    try {
      return await this.post<T>(path, payload, token);
    } catch (err) {
      if (!(err instanceof EtcdError && err.grpcCode === GRPC_UNAUTHENTICATED)) throw err;
      if (this.token && (await this.token.catch(() => undefined)) === token) this.token = undefined;
      return this.post<T>(path, payload, await this.authToken());
    }
  }

  private authToken(): Promise<string> {
    const { username, password } = this.connection.auth!;
    if (this.token) return this.token;
    const pending = this.post<{ token?: string }>('/v3/auth/authenticate', Buffer.from(JSON.stringify({ name: username, password })), undefined).then(({ answer }) => {
      if (!answer.token) throw new EtcdError('etcd gave no token for the user and password', GRPC_UNAUTHENTICATED);
      return answer.token;
    });
    this.token = pending;
    // A failed exchange is tried again by the next call.
    pending.catch(() => {
      if (this.token === pending) this.token = undefined;
    });
    return pending;
  }

  /**
   * One request, to the endpoint that answered last and, if it gives no answer (refused, reset,
   * or silent past the deadline: a hung etcd), to the others in turn, any cooling down after a
   * silence last; the one that answers is asked first from then on. An error etcd answered is
   * thrown: another endpoint would say the same.
   */
  private async post<T>(path: string, payload: Buffer, token: string | undefined): Promise<{ answer: T; resent: boolean }> {
    let lastError: unknown;
    let resent = false;
    for (const at of this.preference.attempts()) {
      try {
        const answer = await this.exchange<T>(this.pools[at]!, path, payload, token);
        this.preference.answered(at);
        return { answer, resent };
      } catch (err) {
        if (err instanceof EtcdError) {
          this.preference.answered(at);
          throw err;
        }
        lastError = err;
        const code = errorCode(err);
        resent ||= !NOT_SENT.has(code);
        this.preference.failed(at, SILENT.has(code) || isDeadline(err));
      }
    }
    throw lastError;
  }

  private async exchange<T>(pool: ConnectionPool, path: string, payload: Buffer, token: string | undefined): Promise<T> {
    const headers: Record<string, string> = { 'content-type': 'application/json', ...(token ? { authorization: token } : {}) };
    const response = await pool.post(path, headers, payload, AbortSignal.timeout(this.timeoutMs));
    const text = await bodyText(response, pool.slabs, MAX_ANSWER_BYTES);
    let answer: T & { error?: unknown; message?: string; code?: number };
    try {
      answer = JSON.parse(text) as typeof answer;
    } catch {
      throw new EtcdError(`etcd answered ${path} with HTTP ${response.statusCode} and no JSON: ${text.slice(0, 200)}`, 0);
    }
    if (response.statusCode !== 200) throw new EtcdError(answer.message ?? `HTTP ${response.statusCode}`, answer.code ?? 0);
    return answer;
  }
}

function errorCode(err: unknown): string {
  return (err as { code?: string } | undefined)?.code ?? '';
}

/** The whole request's deadline (AbortSignal.timeout) ran out. */
function isDeadline(err: unknown): boolean {
  return (err as { name?: string } | undefined)?.name === 'TimeoutError';
}

function b64(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64');
}

function unb64(text: string): string {
  return Buffer.from(text, 'base64').toString('utf8');
}

/** The end of a prefix's key range, in base64: the prefix with its last byte raised by one (trailing 0xff bytes dropped). */
export function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, 'utf8');
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0xff) end--;
  if (end === 0) return b64('\0'); // every key
  const out = Buffer.from(bytes.subarray(0, end));
  out[end - 1]! += 1;
  return out.toString('base64');
}
