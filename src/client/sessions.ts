// The modules themselves, not their indexes: those load the worker's side too (gate, TLS servers), a third of `fanout cat`'s start-up.
import { ClientCredentials } from '../lib/auth/client.js';
import { sha256 } from '../lib/checksum/index.js';
import type { PeerTimeouts } from '../lib/cluster/index.js';
import { readCa, tlsConnectOptions, type CaOption } from '../lib/tls/client.js';
import { ClusterSession, type SessionCredentials } from './session.js';

export interface SharedSessionOptions {
  endpoints: string[];
  /** Empty or undefined: FANOUT_TOKEN, else the token a local `fanout serve` published. */
  token?: string;
  ca?: CaOption;
  timeouts: PeerTimeouts;
  membershipRefreshMs?: number;
  /** Extra headers on every request to workers (a cluster reading another sends its id: lib/ufs/fanout.ts). */
  headers?: Record<string, string>;
}

/** Open sessions of this process, by endpoints, credentials, CA and deadlines. */
const open = new Map<string, ClusterSession>();

/**
 * The process's session for these endpoints and credentials, shared by every client that asks
 * with the same ones (the mount and the sync agent of one process, `fanout load`'s admin calls
 * and its reads): one member refresh and one set of connection pools. Each caller releases it
 * once; the last release closes it.
 */
export function sharedSession(options: SharedSessionOptions): ClusterSession {
  const token = options.token || process.env.FANOUT_TOKEN || undefined;
  const ca = readCa(options.ca ?? process.env.FANOUT_CA);
  const key = JSON.stringify([
    options.endpoints,
    token ?? '',
    // Keyed by the CA's digest, not its bytes: the key stays short and holds no certificate text.
    ca ? sha256(ca).toString('hex') : '',
    options.timeouts,
    options.membershipRefreshMs ?? null,
    options.headers ?? null,
  ]);
  let session = open.get(key);
  if (!session || session.closed) {
    const created = new ClusterSession({
      endpoints: options.endpoints,
      credentials: withHeaders(new ClientCredentials(token), options.headers),
      connect: tlsConnectOptions(ca),
      timeouts: options.timeouts,
      membershipRefreshMs: options.membershipRefreshMs,
    });
    created.onClosed = () => {
      if (open.get(key) === created) open.delete(key);
    };
    open.set(key, created);
    session = created;
  }
  return session.retain();
}

/** Sessions this process holds open (tests assert that users share them and that closing frees them). */
export function openSessionCount(): number {
  return open.size;
}

/** Credentials that also send `extra` on every request (the credentials' own headers win). */
function withHeaders(credentials: SessionCredentials, extra: Record<string, string> | undefined): SessionCredentials {
  if (!extra) return credentials;
  return { headersFor: (url) => ({ ...extra, ...credentials.headersFor(url) }) };
}
