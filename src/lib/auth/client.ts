import { publishedTokenFor } from './localtoken.js';

/**
 * The token a client (SDK, CLI, sync agent, mount) sends to a worker: the one it was given,
 * else FANOUT_TOKEN, else the token a local `fanout serve` of this user published for that
 * address. Lookups of published tokens are remembered briefly, since headers are built for
 * every page request.
 */
export class ClientCredentials {
  private readonly cache = new Map<string, { token: string | undefined; at: number }>();

  constructor(
    private readonly token: string | undefined = nonEmpty(process.env.FANOUT_TOKEN),
    private readonly now: () => number = () => performance.now(),
  ) {}

  tokenFor(url: string): string | undefined {
    if (this.token !== undefined) return this.token;
    const cached = this.cache.get(url);
    if (cached && this.now() - cached.at < LOOKUP_TTL_MS) return cached.token;
    let token: string | undefined;
    try {
      token = publishedTokenFor(url);
    } catch {
      token = undefined; // not a URL we can key: no published token
    }
    this.cache.set(url, { token, at: this.now() });
    return token;
  }

  headersFor(url: string): Record<string, string> {
    const token = this.tokenFor(url);
    return token === undefined ? {} : { authorization: `Bearer ${token}` };
  }
}

/** A serve restarted on the same port publishes a new token; clients pick it up this soon. */
const LOOKUP_TTL_MS = 1000;

function nonEmpty(value: string | undefined): string | undefined {
  return value ? value : undefined;
}
