import type { IncomingHttpHeaders } from 'node:http';
import { FanoutError } from '../../core/errors.js';
import { DIRECT_HEADER } from '../cluster/index.js';
import type { AttemptServer, ClientAddress, FailedAttempts } from './attempts.js';
import { PEER_HEADER, PeerCredential } from './peer.js';
import { TokenTable, allows, bearerToken, type Role, type TokenEntry } from './tokens.js';

/** What a route needs: nothing (health), a data read, or an admin call. */
export type Access = 'open' | Role;

/** Headers only workers of the cluster may send: the credential itself and what it unlocks. */
export const PEER_ONLY_HEADERS: readonly string[] = [DIRECT_HEADER, PEER_HEADER];

export interface AuthSettings {
  tokens: readonly TokenEntry[];
  /** true: data reads need a read or admin token too; false: they are open. */
  readToken: boolean;
  /** Shared by the workers of a cluster; without it no request counts as a peer's. */
  clusterSecret?: string | undefined;
}

/**
 * Decides, from a request's headers alone, whether it may go on. Refusals are FanoutErrors:
 * UNAUTHENTICATED (no token, or one this worker does not know) or FORBIDDEN (a known token
 * whose role is too weak, or a peer-only header without a valid peer credential).
 */
export class AccessGate {
  readonly tokens: TokenTable;
  readonly peer: PeerCredential | undefined;

  constructor(
    private readonly settings: AuthSettings,
    /** Refused tokens per client address (auth.attempts); without it, guesses are not limited. */
    readonly attempts?: FailedAttempts,
  ) {
    if (settings.readToken && !settings.clusterSecret) {
      // A worker reads pages through its peers and through its own API: with reads closed,
      // those requests need the peer credential or every cluster read would be refused.
      throw new FanoutError('INVALID_CONFIG', 'auth.readToken needs auth.clusterSecret (or FANOUT_CLUSTER_SECRET): workers read pages through each other');
    }
    this.tokens = new TokenTable(settings.tokens);
    this.peer = settings.clusterSecret ? new PeerCredential(settings.clusterSecret) : undefined;
  }

  /** Headers this worker sends to its peers (empty without a cluster secret). */
  peerHeaders(): Record<string, string> {
    return this.peer?.headers() ?? {};
  }

  /**
   * Returns whether the request comes from a peer; throws when it may not go on. `from` is the
   * client (its socket): an unknown token from its address counts against it (FailedAttempts), and once it
   * has given too many, its tokens are refused unchecked (TOO_MANY_ATTEMPTS), a valid one too, or
   * the answer would still tell a right guess. Peers are never counted nor throttled.
   */
  check(headers: IncomingHttpHeaders, need: Access, from?: ClientAddress, server: AttemptServer = 'api'): { peer: boolean } {
    const peer = this.peer?.verify(headers[PEER_HEADER]) === true;
    if (!peer) {
      const used = PEER_ONLY_HEADERS.find((name) => headers[name] !== undefined);
      if (used) {
        throw new FanoutError(
          'FORBIDDEN',
          this.peer ? `${used} is only for workers of this cluster` : `${used} is refused: this worker has no cluster secret (auth.clusterSecret)`,
        );
      }
    }
    if (need === 'open' || (need === 'read' && (peer || !this.settings.readToken))) return { peer };
    const token = bearerToken(headers.authorization);
    if (token === undefined) throw new FanoutError('UNAUTHENTICATED', `this call needs ${article(need)} ${need} token (Authorization: Bearer TOKEN, or FANOUT_TOKEN for the CLI and SDK)`);
    if (!peer) this.attempts?.check(from, server);
    const role = this.tokens.roleOf(token);
    if (role === undefined) {
      if (!peer) this.attempts?.failed(from);
      throw new FanoutError('UNAUTHENTICATED', 'unknown token');
    }
    if (!allows(role, need)) throw new FanoutError('FORBIDDEN', `this call needs an admin token; the token given is a ${role} token`);
    return { peer };
  }
}

function article(role: Role): string {
  return role === 'admin' ? 'an' : 'a';
}
