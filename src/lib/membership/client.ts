import { Etcd3, type IOptions } from 'etcd3';
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
  const options: IOptions = {
    hosts: connection.endpoints,
    dialTimeout: timeoutMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    // Retrying and backing off is each caller's job. etcd3's per-host circuit breaker would
    // refuse calls for 5 s after etcd comes back, delaying recovery for no gain.
    faultHandling: { host: () => passThroughPolicy },
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
  return new Etcd3(options);
}


/**
 * A cockatiel-shaped policy that just runs the call: retrying and backing off is the
 * LeaseSchedule's job (or the release command's), not etcd3's.
 */
export const passThroughPolicy = {
  execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) =>
    Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
} as unknown as ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;
