import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';

/**
 * The TCP connects one etcd client's gRPC channels start, so that closing the client ends those
 * still pending. grpc-js keeps no handle on a socket until it connected (transport.js tcpConnect:
 * the socket is a local of a promise) and has no connect deadline: closing a channel left its
 * connect in the kernel, in SYN_SENT until the SYN retries ran out (127 s). A membership cut from
 * etcd replaces its client every failed round (EtcdClientRenewal), and each one left its connect
 * behind: 5 sockets of one worker retrying SYNs to one etcd after a 40 s cut (measured).
 *
 * Which client a socket is for: Node publishes each socket `net.connect` makes on the
 * `net.client.socket` diagnostics channel; the client's calls run inside this tracker's async
 * context (createEtcdClient wraps etcd3's withConnection), and grpc-js connects from within them
 * (or from its timers and socket callbacks, which keep that context). A socket made while no
 * tracker's context is current (a peer connection, a page request) costs one lookup, nothing kept.
 */
export class ClientConnects {
  private readonly sockets = new Set<Socket>();
  private closed = false;

  /** Runs `fn` (a call into the client) so the connects it starts are this client's. */
  run<T>(fn: () => T): T {
    watchConnects();
    return owners.run(this, fn);
  }

  /** Ends the connects still pending; any started later in this client's context ends at once. */
  close(): void {
    this.closed = true;
    for (const socket of this.sockets) if (socket.connecting) socket.destroy();
    this.sockets.clear();
  }

  /** Sockets of this client still connecting (tests, diagnostics). */
  get pending(): number {
    let n = 0;
    for (const socket of this.sockets) if (socket.connecting) n++;
    return n;
  }

  private adopt(socket: Socket): void {
    // A closed client's subchannel retrying (its backoff timer) connects for nobody.
    if (this.closed) {
      process.nextTick(() => socket.destroy());
      return;
    }
    this.sockets.add(socket);
    socket.once('connect', () => this.sockets.delete(socket));
    socket.once('close', () => this.sockets.delete(socket));
  }

  static adopt(message: unknown): void {
    owners.getStore()?.adopt((message as { socket: Socket }).socket);
  }
}

const owners = new AsyncLocalStorage<ClientConnects>();
let watching = false;

function watchConnects(): void {
  if (watching) return;
  watching = true;
  subscribe('net.client.socket', ClientConnects.adopt);
}
