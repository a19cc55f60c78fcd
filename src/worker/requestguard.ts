import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Logger } from 'pino';
import { FanoutError } from '../core/errors.js';
import { answerUnparsable, bodyStillComing, checkHostHeader, closeIfOrphaned, foreignHostRefusal, inTurn, isHeaderOverflow, MAX_PIPELINED, type ConnectionCap } from '../lib/http/index.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import { sendError } from './http.js';

export interface RequestGuardDeps {
  logger: Logger;
  metrics: Pick<WorkerMetrics, 'requestErrors'>;
  /** Connections beyond the cap are answered OVERLOADED and closed. */
  connections: Pick<ConnectionCap, 'isExcess'>;
  maxConnections: number;
  /**
   * Whether the API listens on a loopback address only (known once it listens): its requests
   * must then name a loopback host (lib/http/loopback.ts: DNS rebinding).
   */
  loopbackOnly?: () => boolean;
  /** The request's own code (the routes). */
  dispatch(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

/**
 * Around every request of the worker's API: the connection cap, the Host checks, and a failure
 * of the request's own code turned into that request's error answer, never the process's end.
 * Counts the requests in flight, which a drain waits on.
 */
export class RequestGuard {
  /** Requests of the HTTP API being answered, and what a drain waits on (see Worker.stop). */
  private requestsInFlight = 0;
  private onIdle: (() => void) | undefined;

  constructor(private readonly deps: RequestGuardDeps) {}

  /**
   * The last-resort guard around a request's own code: whatever it throws, synchronously or
   * not, fails that request (INTERNAL with a log line) and never the process.
   */
  handle(req: IncomingMessage, res: ServerResponse): void {
    const fail = (err: unknown) => {
      try {
        // A body abandoned part-way (over the admin limit) leaves the connection mid-message and
        // no longer read: close it after the answer, or the next request a keep-alive client sends
        // on it waits forever. A body never touched and still coming (a refused admin call with
        // `content-length: 1 TiB`: refused before its body, with no credentials) closes it too:
        // node would read and drop it for as long as the client sends it. One that has all
        // arrived, or is declared at most 64 MiB, is dropped by node:http as usual, and the
        // connection kept (bodyStillComing).
        const close = (req.destroyed && !req.complete) || bodyStillComing(req);
        const error = sendError(res, err, close ? { connection: 'close' } : {});
        this.deps.metrics.requestErrors.labels(error.code).inc();
        if (error.code === 'INTERNAL') this.deps.logger.error({ err, url: loggedUrl(req.url) }, 'request failed unexpectedly');
        else if (error.status >= 500) this.deps.logger.warn({ code: error.code, err: error.message, url: loggedUrl(req.url) }, 'request failed');
      } catch (cannotAnswer) {
        this.deps.logger.error({ err: cannotAnswer, url: loggedUrl(req.url) }, 'request failed and could not be answered');
        res.destroy();
      }
    };
    // A request stream error (client reset mid-body) must not become an unhandled 'error'.
    req.on('error', () => res.destroy());
    res.on('error', () => {});
    this.requestsInFlight++;
    closeIfOrphaned(req, res);
    res.once('close', () => {
      if (--this.requestsInFlight === 0) this.onIdle?.();
    });
    if (this.deps.connections.isExcess(req.socket)) {
      res.shouldKeepAlive = false;
      return fail(new FanoutError('OVERLOADED', `this worker serves at most ${this.deps.maxConnections} connections; retry shortly`));
    }
    const answered = inTurn(req, res, () => {
      try {
        checkHostHeader(req);
        this.checkLoopbackHost(req);
        this.deps.dispatch(req, res).catch(fail);
      } catch (err) {
        fail(err);
      }
    });
    if (!answered) {
      this.deps.metrics.requestErrors.labels('OVERLOADED').inc();
      this.deps.logger.warn({ url: loggedUrl(req.url), pipelined: MAX_PIPELINED }, 'connection closed: too many pipelined requests waiting');
    }
  }

  /**
   * A worker only this machine reaches answers only requests addressed to this machine: a page
   * whose name was pointed at 127.0.0.1 (DNS rebinding) would read its open data in a browser.
   * FORBIDDEN (403), not a new code: no credential changes the answer, and clients already take
   * FORBIDDEN as final (not retried on another worker, the worker not marked down). A request
   * without Host (HTTP/1.0) does not come from a browser and goes on.
   */
  private checkLoopbackHost(req: IncomingMessage): void {
    if (!this.deps.loopbackOnly?.()) return;
    const refusal = foreignHostRefusal(req.headers.host, 'this worker');
    if (refusal) throw new FanoutError('FORBIDDEN', `${refusal} (a web page whose name was pointed at 127.0.0.1 must not read it); to serve other names, listen on another address`);
  }

  /** Waits (at most `ms`) until no API request is in flight. */
  async drain(ms: number): Promise<void> {
    if (this.requestsInFlight === 0) return;
    this.deps.logger.info({ requests: this.requestsInFlight, drainMs: ms }, 'draining: waiting for requests in flight');
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.onIdle = resolve;
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.onIdle = undefined;
    if (this.requestsInFlight > 0) this.deps.logger.warn({ requests: this.requestsInFlight }, 'drain time over: cutting the requests still in flight');
  }
}

/** Requests node:http cannot parse get the same JSON error body as any other failure, with a stable code. */
export function answerMalformedRequests(server: Server | HttpsServer): void {
  answerUnparsable(server, (err) => {
    const error = isHeaderOverflow(err)
      ? new FanoutError('REQUEST_TOO_LARGE', 'request headers too large')
      : new FanoutError('INVALID_ARGUMENT', `malformed HTTP request (${err.code ?? err.message})`);
    const body = JSON.stringify({ error: error.toJSON() });
    return { status: error.status, headers: { 'content-type': 'application/json', 'x-fanout-error': error.code }, body };
  });
}

/** A request's URL as logs show it: a token in its query (the dashboard's `/ui?token=…` link) is not written out. */
export function loggedUrl(url: string | undefined): string | undefined {
  return url?.replace(/([?&]token=)[^&#]*/gi, '$1[redacted]');
}
