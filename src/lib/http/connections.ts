import type { Server } from 'node:http';
import { Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';

export interface ServerLimits {
  /** Open connections served; requests on connections beyond it get a quick 503 and a close. */
  maxConnections: number;
  /** Idle keep-alive connections close, and request headers must arrive, within this time. */
  clientIdle: number;
}

/**
 * Bounds what idle, slow or too many clients can hold of a server: request headers and
 * bodies have a deadline (slowloris), idle keep-alive connections close, and connections
 * beyond the cap are answered (by `isExcess` in the request handler: a clear 503 with a code
 * the client can act on) instead of being dropped silently as `server.maxConnections` does.
 */
export class ConnectionCap {
  private open = 0;
  private readonly excess = new WeakSet<Socket>();

  constructor(
    server: Server,
    private readonly limits: ServerLimits,
  ) {
    server.headersTimeout = Math.min(limits.clientIdle, 60_000);
    server.requestTimeout = Math.max(server.headersTimeout, Math.min(limits.clientIdle * 2, 300_000));
    server.keepAliveTimeout = Math.min(limits.clientIdle, 30_000);
    // A hard ceiling far above the cap: beyond it even the 503 would cost too much to write.
    server.maxConnections = limits.maxConnections * 2 + 64;
    // Over TLS a request's socket is the TLS one, which exists once the handshake is done (the
    // handshake itself has its own deadline): count those, so isExcess sees what requests carry.
    server.on(server instanceof HttpsServer ? 'secureConnection' : 'connection', (socket: Socket) => {
      this.open++;
      if (this.open > limits.maxConnections) this.excess.add(socket);
      socket.once('close', () => this.open--);
    });
  }

  get connections(): number {
    return this.open;
  }

  /** True for a request that arrived on a connection beyond the cap (answer 503 and close it). */
  isExcess(socket: Socket | null | undefined): boolean {
    return socket !== null && socket !== undefined && this.excess.has(socket);
  }
}
