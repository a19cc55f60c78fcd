import { FanoutError } from '../../core/errors.js';
import type { AuthSettings } from './gate.js';
import { MIN_TOKEN_LENGTH, TOKEN_TEXT, type TokenEntry } from './tokens.js';

/**
 * A daemon's auth settings with its environment added: FANOUT_TOKEN is one more admin token
 * (the same variable the CLI sends, so one export serves both ends; INVALID_CONFIG when the
 * config lists it with another role), and FANOUT_CLUSTER_SECRET
 * is the cluster secret when the config has none (secrets kept out of config files).
 */
export function authFromEnvironment<T extends AuthSettings>(auth: T, env: NodeJS.ProcessEnv = process.env): T & { tokens: TokenEntry[]; clusterSecret: string | undefined } {
  const tokens = [...auth.tokens];
  const token = env.FANOUT_TOKEN;
  if (token) {
    if (token.length < MIN_TOKEN_LENGTH) throw new FanoutError('INVALID_CONFIG', `FANOUT_TOKEN must be at least ${MIN_TOKEN_LENGTH} characters`);
    if (!TOKEN_TEXT.test(token)) throw new FanoutError('INVALID_CONFIG', 'FANOUT_TOKEN must be printable ASCII without spaces');
    // The CLI sends FANOUT_TOKEN too: a user who exports their read token for it on a host that
    // also runs a worker must not make it an admin token there. Refused, naming both places.
    const listed = auth.tokens.findIndex((t) => t.token === token);
    if (listed !== -1 && auth.tokens[listed]!.role !== 'admin') {
      throw new FanoutError(
        'INVALID_CONFIG',
        `FANOUT_TOKEN (an admin token for a worker) is also auth.tokens.${listed} with role ${auth.tokens[listed]!.role}: give each token one role (unset FANOUT_TOKEN for the worker, or use another token)`,
      );
    }
    if (listed === -1) tokens.push({ token, role: 'admin' });
  }
  const secret = auth.clusterSecret ?? (env.FANOUT_CLUSTER_SECRET || undefined);
  if (secret !== undefined && secret.length < MIN_TOKEN_LENGTH) {
    throw new FanoutError('INVALID_CONFIG', `FANOUT_CLUSTER_SECRET must be at least ${MIN_TOKEN_LENGTH} characters`);
  }
  return { ...auth, tokens, clusterSecret: secret };
}
