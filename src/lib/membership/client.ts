import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import { FanoutError } from '../../core/errors.js';
import { deferredRootsPem } from '../tls/client.js';
import { DEFAULT_ETCD_TIMEOUT_MS, readPem, type EtcdConnection } from './connection.js';

export type { EtcdConnection } from './connection.js';
export { DEFAULT_ETCD_TIMEOUT_MS } from './connection.js';

/**
 * The one place a gRPC etcd client is made: the membership's, and the release index's watches
 * (its reads and writes go through etcd's JSON gateway, lib/etcdjson). Every unary
 * call (the password exchange included) gets a deadline of `timeoutMs`, and the connection a
 * dial timeout of the same; the watch and keepalive streams are bounded by their callers
 * (lib/membership/rpc.ts), since a deadline on a stream would end it.
 */
export function createEtcdClient(connection: EtcdConnection, timeoutMs = DEFAULT_ETCD_TIMEOUT_MS): Etcd3 {
  if (connection.endpoints.length === 0) throw new FanoutError('INVALID_CONFIG', 'etcd needs at least one endpoint');
  const preference = new EndpointPreference(connection.endpoints.length);
  let nextHost = 0; // etcd3 asks for the host policies in the order of `hosts`
  const options: IOptions = {
    hosts: connection.endpoints,
    dialTimeout: timeoutMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    // Retrying and backing off is each caller's job. etcd3's per-host circuit breaker would
    // refuse calls for 5 s after etcd comes back, delaying recovery for no gain. Its default
    // global policy stays: a recoverable error (deadline, unavailable) is retried on the next
    // host in `preference`'s order, within the same call.
    faultHandling: { host: () => preference.policy(nextHost++) },
    grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 },
  };
  const { tls, auth } = connection;
  if (tls) {
    options.credentials = {
      rootCertificate: readPem(tls.ca, 'CA'),
      ...(tls.cert && tls.key ? { certChain: readPem(tls.cert, 'client certificate'), privateKey: readPem(tls.key, 'client key') } : {}),
    };
  } else if (connection.endpoints.some((e) => e.startsWith('https://'))) {
    // No CA of its own: what Node's default store would trust, where the launcher kept
    // NODE_EXTRA_CA_CERTS from Node (a following `fanout sync`'s watch; lib/tls's deferredTrust).
    const roots = deferredRootsPem();
    if (roots) options.credentials = { rootCertificate: roots };
  }
  if (auth) options.auth = { username: auth.username, password: auth.password };
  const client = new Etcd3(options);
  // etcd3 shuffles the hosts for every call and every stream: with one endpoint that accepts
  // connections but never answers, half the keepalives and watches went there and the lease
  // was lost over and over. Calls and streams go to the preferred endpoint instead.
  const pool = (client as unknown as { pool: { hosts: unknown[]; shuffledHosts(): Generator<unknown> } }).pool;
  pool.shuffledHosts = () => preference.order(pool.hosts);
  preferences.set(client, preference);
  return client;
}

const preferences = new WeakMap<Etcd3, EndpointPreference>();

/**
 * Which endpoint a client talks to: the one that last answered, so a hung or dead endpoint
 * costs one timeout, not one per call. The preferred endpoint is left (for the next in the
 * configured order) when a call or stream on it fails; one that works is kept.
 */
export class EndpointPreference {
  private preferred = 0;

  constructor(private readonly count: number) {}

  /** The endpoint the next call or stream goes to (index into the configured endpoints). */
  get current(): number {
    return this.preferred;
  }

  /** The order one call tries the hosts in: the preferred first, then the others, endlessly. */
  *order<T>(hosts: readonly T[]): Generator<T> {
    const start = this.preferred;
    for (let i = 0; ; i++) yield hosts[(start + i) % hosts.length]!;
  }

  /** Endpoint `index` failed; if it was preferred, the next one is. Calls that failed on an already-left endpoint change nothing. */
  failed(index: number): void {
    if (index === this.preferred) this.preferred = (index + 1) % this.count;
  }

  /** The host policy of endpoint `index`: runs the call (no retry, no breaker) and notes its failures. */
  policy(index: number): typeof passThroughPolicy {
    return {
      execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) =>
        passThroughPolicy.execute(fn).catch((err: unknown) => {
          // Recoverable is etcd3's word for "the host, not the request": deadline, unavailable, ….
          // A stream's error reaches here too (etcd3's markFailed runs it through this policy).
          if (err instanceof Error && isRecoverableError(err)) this.failed(index);
          throw err;
        }),
    } as unknown as typeof passThroughPolicy;
  }
}

/** The endpoint `client`'s next stream will go to; pass it to endpointUnanswered if the stream then gets no answer. */
export function preferredEndpoint(client: Etcd3): number | undefined {
  return preferences.get(client)?.current;
}

/**
 * A stream on `endpoint` got no answer in time (a hung etcd never errs the stream, so etcd3
 * cannot tell): the next call and stream go to another endpoint.
 */
export function endpointUnanswered(client: Etcd3, endpoint: number | undefined): void {
  if (endpoint !== undefined) preferences.get(client)?.failed(endpoint);
}


/**
 * A cockatiel-shaped policy that just runs the call: retrying and backing off is the
 * LeaseSchedule's job (or the release command's), not etcd3's.
 */
export const passThroughPolicy = {
  execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) =>
    Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
} as unknown as ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;
