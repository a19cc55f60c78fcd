import { Agent, request } from 'undici';
import { FanoutError } from '../../core/errors.js';
import type { Member } from '../../core/types.js';
import type { ClientTrust } from '../../lib/tls/client.js';

export interface RelayOptions {
  /** Headers that let a peer in (the cluster credential). */
  headers: () => Record<string, string>;
  /** TLS options for https peers (the cluster CA). */
  connect?: ClientTrust;
  /** Whole-call deadline per member; default 2.5 s. */
  timeoutMs?: number;
  /** Relays in flight at once on this worker; more are refused with OVERLOADED. Default 32. */
  maxInflight?: number;
  /** Largest answer accepted from a member; default 1 MiB. */
  maxBytes?: number;
}

/**
 * Asks another member for its dashboard data on behalf of a browser. The browser talks to one
 * worker only: member URLs are often addresses an operator's browser cannot reach (pod IPs,
 * a private network) and cross-origin calls would need CORS and a token per member. Each call
 * has a deadline and a size cap, and the number in flight is bounded, so a stopped member or
 * a flood of open dashboards costs this worker little.
 */
export class MemberRelay {
  private readonly agent: Agent;
  private inflight = 0;
  private readonly timeoutMs: number;
  private readonly maxInflight: number;
  private readonly maxBytes: number;

  constructor(private readonly options: RelayOptions) {
    this.timeoutMs = options.timeoutMs ?? 2_500;
    this.maxInflight = options.maxInflight ?? 32;
    this.maxBytes = options.maxBytes ?? 1024 * 1024;
    this.agent = new Agent({
      connect: options.connect,
      connections: 4,
      connectTimeout: this.timeoutMs,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
    });
  }

  /** GETs `path` from `member` and parses its JSON; WORKER_UNAVAILABLE when it does not answer in time or well. */
  async getJson(member: Member, path: string): Promise<unknown> {
    if (this.inflight >= this.maxInflight) throw new FanoutError('OVERLOADED', `${this.maxInflight} member requests already in flight`);
    this.inflight++;
    try {
      return await this.fetch(member, path);
    } finally {
      this.inflight--;
    }
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => {});
  }

  private async fetch(member: Member, path: string): Promise<unknown> {
    const url = `${member.url.replace(/\/+$/, '')}${path}`;
    try {
      const res = await request(url, { dispatcher: this.agent, headers: this.options.headers(), signal: AbortSignal.timeout(this.timeoutMs) });
      const declared = Number(res.headers['content-length'] ?? 0);
      if (declared > this.maxBytes) {
        res.body.destroy();
        throw new FanoutError('WORKER_UNAVAILABLE', `member ${member.id} answered ${declared} bytes, over the ${this.maxBytes} accepted`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > this.maxBytes) {
          res.body.destroy();
          throw new FanoutError('WORKER_UNAVAILABLE', `member ${member.id} answered more than ${this.maxBytes} bytes`);
        }
        chunks.push(chunk);
      }
      const text = Buffer.concat(chunks).toString();
      if (res.statusCode !== 200) {
        const code = /"code":"([A-Z_]+)"/.exec(text)?.[1] ?? `HTTP ${res.statusCode}`;
        throw new FanoutError('WORKER_UNAVAILABLE', `member ${member.id} answered ${code}`);
      }
      return JSON.parse(text);
    } catch (err) {
      if (err instanceof FanoutError) throw err;
      const reason = (err as Error).name === 'TimeoutError' ? `no answer within ${this.timeoutMs} ms` : (err as Error).message;
      // The page shows the member's id and address beside this: the reason alone.
      throw new FanoutError('WORKER_UNAVAILABLE', reason, { cause: err });
    }
  }
}
