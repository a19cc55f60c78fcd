import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import type { Agent as HttpsAgent } from 'node:https';
import type { PeerTimeouts } from '../lib/cluster/timeouts.js';

/** node:https (and TLS under it) is loaded for https:// workers only: ≈15 ms of every plain `fanout cat`. */
const https = (): typeof import('node:https') => createRequire(import.meta.url)('node:https') as typeof import('node:https');

/**
 * GETs of the SDK's small JSON answers (/v1/cluster, /v1/stat, /v1/list, /v1/status) on Node's
 * own HTTP client. undici took most of a short CLI command's start-up (≈60 % of the module load
 * of `fanout cat`), and these few requests need none of what it offers. Deadlines are the
 * page requests' (connect, first byte, silence between body chunks); a timeout fails with the
 * code undici gives the same deadline, so callers describe both alike (describeTimeout).
 */
export class JsonGetter {
  private readonly http = new HttpAgent({ keepAlive: true });
  private httpsAgent: HttpsAgent | undefined;

  constructor(
    private readonly timeouts: PeerTimeouts,
    /** TLS options of every https:// request (the CA bundle). */
    private readonly tls: { ca: Buffer } | undefined,
  ) {}

  private get https(): HttpsAgent {
    this.httpsAgent ??= new (https().Agent)({ keepAlive: true, ...this.tls });
    return this.httpsAgent;
  }

  /** The status and body text of GET `url`; rejects on a network failure or a missed deadline. */
  async get(url: string, headers: Record<string, string>): Promise<{ statusCode: number; text: string }> {
    try {
      return await this.once(url, headers);
    } catch (err) {
      // A kept-alive connection the worker closed just as this request went out on it: the
      // request never reached the worker, so it is sent again once, on a new connection.
      if (!(err as { reusedSocket?: boolean }).reusedSocket) throw err;
      return this.once(url, headers);
    }
  }

  private once(url: string, headers: Record<string, string>): Promise<{ statusCode: number; text: string }> {
    return new Promise((resolve, reject) => {
      const target = new URL(url);
      const secure = target.protocol === 'https:';
      const request = secure ? https().request : httpRequest;
      let timer: NodeJS.Timeout | undefined;
      let req: ClientRequest | undefined;
      let answered = false;
      const fail = (err: Error) => {
        clearTimeout(timer);
        req?.destroy(err);
        reject(err);
      };
      // One deadline at a time: connecting, then the response head, then each silence in the body.
      const arm = (ms: number, code: string, what: string) => {
        clearTimeout(timer);
        timer = setTimeout(() => fail(Object.assign(new Error(`${what} timeout`), { code })), ms);
      };
      req = request(target, { method: 'GET', headers, agent: secure ? this.https : this.http });
      arm(this.timeouts.connectMs, 'UND_ERR_CONNECT_TIMEOUT', 'connect');
      req.once('socket', (socket) => {
        const connected = () => arm(this.timeouts.firstByteMs, 'UND_ERR_HEADERS_TIMEOUT', 'headers');
        // A kept-alive socket is connected already; a new one says so once (and TLS once secure).
        if (!socket.connecting && !(socket as { pending?: boolean }).pending) connected();
        else socket.once(secure ? 'secureConnect' : 'connect', connected);
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        const stale = req!.reusedSocket && !answered && (err.code === 'ECONNRESET' || err.code === 'EPIPE');
        fail(stale ? Object.assign(err, { reusedSocket: true }) : err);
      }); // on, not once: destroying the request after a deadline emits its error again
      req.once('response', (response: IncomingMessage) => {
        answered = true;
        const parts: Buffer[] = [];
        arm(this.timeouts.idleMs, 'UND_ERR_BODY_TIMEOUT', 'body');
        response.on('data', (chunk: Buffer) => {
          parts.push(chunk);
          arm(this.timeouts.idleMs, 'UND_ERR_BODY_TIMEOUT', 'body');
        });
        response.on('error', fail);
        response.once('aborted', () => fail(new Error('the connection closed before the body was complete')));
        response.once('end', () => {
          clearTimeout(timer);
          resolve({ statusCode: response.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') });
        });
      });
      req.end();
    });
  }

  close(): void {
    this.http.destroy();
    this.httpsAgent?.destroy();
  }
}
