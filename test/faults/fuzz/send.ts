import { Agent, request } from 'node:http';

/**
 * One generated HTTP request sent with raw node:http (no client library that would normalize
 * the path or the headers), with a deadline: a request that gets no complete answer in time is
 * reported as such, never awaited forever.
 */
export interface RawRequest {
  method: string;
  /** Path and query exactly as they go on the request line (already percent-encoded or not). */
  target: string;
  headers: [string, string][];
  body?: Buffer;
}

export type Outcome =
  | { kind: 'response'; status: number; headers: Record<string, string | string[] | undefined>; body: Buffer; trailers: Record<string, string | undefined> }
  | { kind: 'unsendable'; message: string }
  | { kind: 'network'; message: string }
  | { kind: 'timeout' };

/** Bodies larger than this are cut off (and counted as cut); data responses here are a few MiB at most. */
const MAX_READ = 8 * 1024 * 1024;

/**
 * Idle kept-alive sockets are closed by this client well before the servers' keepAliveTimeout
 * (30 s, src/lib/http/connections.ts) closes them: a request written on a socket the server is
 * closing at that instant gets "socket hang up" (ECONNRESET) with no answer. node's Agent applies
 * the server's `Keep-Alive: timeout=` hint only when it has a timeout of its own, and then the
 * same value, so the race stays open without this.
 */
const IDLE_SOCKET_MS = 5_000;
/** Attempts of a request whose kept-alive socket was reset before any answer (see send()). */
const MAX_ATTEMPTS = 3;

export class Sender {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 16, timeout: IDLE_SOCKET_MS });
  /** Requests that got an HTTP answer (the number a run reports). */
  answered = 0;

  constructor(
    private readonly base: string,
    private readonly deadlineMs = 15_000,
  ) {}

  send(req: RawRequest, attempt = 1): Promise<Outcome> {
    const { hostname, port } = new URL(this.base);
    return new Promise<Outcome>((resolve) => {
      let settled = false;
      const finish = (outcome: Outcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (outcome.kind === 'response') this.answered++;
        resolve(outcome);
      };
      const timer = setTimeout(() => {
        finish({ kind: 'timeout' });
        client?.destroy();
      }, this.deadlineMs);
      let client: ReturnType<typeof request> | undefined;
      // node:http frames a GET/DELETE/OPTIONS body by neither length nor chunks: the bytes would
      // be read as the next request on the connection. Every body goes with its length.
      const headers = [...req.headers];
      if (req.body && !headers.some(([name]) => /^(content-length|transfer-encoding)$/i.test(name))) headers.push(['content-length', String(req.body.length)]);
      if (!headers.some(([name]) => name.toLowerCase() === 'host')) headers.unshift(['host', `${hostname}:${port}`]);
      try {
        client = request({
          host: hostname,
          port: Number(port),
          method: req.method,
          path: req.target,
          // A flat [name, value, …] list keeps repeated headers and their order; node:http adds
          // no Host to it, so one was added above unless the request brings its own.
          headers: headers.flat(),
          agent: this.agent,
        });
      } catch (err) {
        // node:http refuses some request lines and header values before sending anything.
        finish({ kind: 'unsendable', message: (err as Error).message });
        return;
      }
      client.on('error', (err) => {
        // A kept-alive connection the server closed just as this request went out on it: what
        // every HTTP client retries (node's docs: check reusedSocket). Several pooled sockets can
        // be closed at once (they idled together), so the retry may land on another: a few
        // attempts, each on a reused socket. A fresh connection that fails is still a failure.
        const reused = client!.reusedSocket;
        if (!settled && attempt < MAX_ATTEMPTS && reused && (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
          settled = true;
          clearTimeout(timer);
          resolve(this.send(req, attempt + 1));
          return;
        }
        finish({ kind: 'network', message: `${err.message} (${reused ? 'kept-alive' : 'new'} connection, attempt ${attempt})` });
      });
      client.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size <= MAX_READ) chunks.push(chunk);
        });
        res.on('error', (err) => finish({ kind: 'network', message: `response body: ${err.message}` }));
        res.on('aborted', () => finish({ kind: 'network', message: 'response body cut short' }));
        res.on('end', () =>
          finish({
            kind: 'response',
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            trailers: res.trailers as Record<string, string | undefined>,
          }),
        );
      });
      client.end(req.body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** A short, printable description of a request for failure messages. */
export function describe(req: RawRequest): string {
  const headers = req.headers.map(([k, v]) => `${k}: ${v.length > 120 ? v.slice(0, 120) + '…' : v}`).join('\n  ');
  const target = req.target.length > 300 ? `${req.target.slice(0, 300)}… (${req.target.length} chars)` : req.target;
  const body = req.body ? `\n  (body: ${req.body.length} bytes: ${JSON.stringify(req.body.subarray(0, 120).toString())})` : '';
  return `${req.method} ${target}\n  ${headers}${body}`;
}
