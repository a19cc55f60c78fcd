import { Etcd3, GRPCDeadlineExceededError, isRecoverableError, type IOptions } from 'etcd3';
import { FanoutError } from '../../core/errors.js';
import { deferredRootsPem } from '../tls/client.js';
import { DEFAULT_ETCD_TIMEOUT_MS, readPem, type EtcdConnection } from './connection.js';
import type { EndpointPreference } from './endpoints.js';
import { sharedEndpointPreference } from './preferences.js';
import { EndpointConnects } from './connects.js';

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
  // The process's one for these endpoints: the JSON client (lib/etcdjson) learns from this one's calls and streams.
  const preference = sharedEndpointPreference(connection.endpoints);
  let nextHost = 0; // etcd3 asks for the host policies in the order of `hosts`
  const options: IOptions = {
    hosts: connection.endpoints,
    dialTimeout: timeoutMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    // Retrying and backing off is each caller's job. etcd3's per-host circuit breaker would
    // refuse calls for 5 s after etcd comes back, delaying recovery for no gain. Its default
    // global policy stays: a recoverable error (deadline, unavailable) is retried on the next
    // host in `preference`'s order, within the same call (endpoints.ts).
    faultHandling: { host: () => hostPolicy(preference, nextHost++) },
    // grpc-js shares a connection among the channels of equal options, process-wide: each client
    // has a generation of its own, so one that replaces another (EtcdClientRenewal) connects anew
    // instead of taking over a silent connection (and a connect stuck in the kernel's SYN
    // retries) of the one it replaces.
    grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000, 'fanout.connection_generation': ++clientsMade },
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
  // was lost over and over. Calls and streams go to the preferred endpoint instead, and one
  // that gave no answer is asked last for a while (EndpointPreference).
  const pool = (client as unknown as { pool?: { hosts?: unknown[]; shuffledHosts?(): Generator<unknown> } }).pool;
  // A private member of etcd3 1.1.2 (package.json pins it): an etcd3 without it must fail every
  // test that makes a client, not quietly go back to shuffling hosts.
  if (!pool || !Array.isArray(pool.hosts) || typeof pool.shuffledHosts !== 'function') {
    throw new FanoutError('INTERNAL', 'etcd3 has no pool.shuffledHosts: this etcd3 version is not the one fanout was built for (package.json pins it)');
  }
  pool.shuffledHosts = () => hostOrder(preference, pool.hosts!);
  preferences.set(client, preference);
  endPendingConnectsOnClose(client, connection.endpoints);
  return client;
}

/** Clients made in this process: each one's generation. */
let clientsMade = 0;

/** A client's close() also ends the connects to its endpoints still pending (connects.ts). */
function endPendingConnectsOnClose(client: Etcd3, endpoints: readonly string[]): void {
  const connects = new EndpointConnects(endpoints);
  const close = client.close.bind(client);
  client.close = () => {
    close();
    connects.close();
  };
}

const preferences = new WeakMap<Etcd3, EndpointPreference>();

/** The order one call tries the hosts in: a round of `attempts()`, again and again (etcd3's retry policy stops after 4). */
function* hostOrder<T>(preference: EndpointPreference, hosts: readonly T[]): Generator<T> {
  for (;;) for (const i of preference.attempts()) yield hosts[i]!;
}

/**
 * The host policy of endpoint `index`: runs the call (no retry, no breaker), notes a unary call's
 * answer and every failure. Recoverable is etcd3's word for "the host, not the request": deadline,
 * unavailable, …; a stream's error reaches here too (etcd3's markFailed runs it through this policy).
 */
function hostPolicy(preference: EndpointPreference, index: number): typeof passThroughPolicy {
  return {
    execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) =>
      passThroughPolicy
        .execute((ctx) => {
          const result = fn(ctx);
          // A unary call resolves with etcd's answer; a stream is returned at once, before any
          // answer (its callers, rpc.ts, say when one came).
          if (!isThenable(result)) return result;
          return Promise.resolve(result).then((value) => (preference.answered(index), value));
        })
        .catch((err: unknown) => {
          if (err instanceof Error && isRecoverableError(err)) preference.failed(index, err instanceof GRPCDeadlineExceededError);
          throw err;
        }),
  } as unknown as typeof passThroughPolicy;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | undefined)?.then === 'function';
}

/** The endpoint `client`'s next stream will go to; pass it to endpointAnswered or endpointUnanswered once the stream says. */
export function preferredEndpoint(client: Etcd3): number | undefined {
  return preferences.get(client)?.current;
}

/** A stream on `endpoint` got its answer: that endpoint is asked first and its cool-down is over. */
export function endpointAnswered(client: Etcd3, endpoint: number | undefined): void {
  if (endpoint !== undefined) preferences.get(client)?.answered(endpoint);
}

/**
 * A stream on `endpoint` got no answer in time (a hung etcd never errs the stream, so etcd3
 * cannot tell): the next call and stream go to another endpoint, and this one cools down.
 */
export function endpointUnanswered(client: Etcd3, endpoint: number | undefined): void {
  if (endpoint !== undefined) preferences.get(client)?.failed(endpoint, true);
}

/**
 * A cockatiel-shaped policy that just runs the call: retrying and backing off is the
 * LeaseSchedule's job (or the release command's), not etcd3's.
 */
export const passThroughPolicy = {
  execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) =>
    Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
} as unknown as ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;
