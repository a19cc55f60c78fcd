import { lookup } from 'node:dns';
import { subscribe } from 'node:diagnostics_channel';
import { isIP, type Socket } from 'node:net';
import { isLeanSocket } from '../leanhttp/index.js';

/**
 * The TCP connects to etcd's endpoints pending in this process: at most one per endpoint (the
 * newest), and closing a gRPC client ends them. grpc-js keeps no handle on a socket until it
 * connected (transport.js tcpConnect: the socket is a local of a promise) and has no connect
 * deadline: closing a channel left its connect in the kernel, in SYN_SENT until the SYN retries ran
 * out (127 s). A membership cut from etcd replaces its client every failed round
 * (EtcdClientRenewal), and each one left its connect behind: 5 sockets of one worker retrying SYNs
 * to one etcd after a 40 s cut (measured).
 *
 * How they are found: Node publishes each socket `net.connect` makes on the `net.client.socket`
 * diagnostics channel, and each socket says where it connects ('connectionAttempt'); one to an
 * endpoint's address is kept until it connects or closes. Which client made it is not known
 * (grpc-js gives no hook; tracking async context instead puts a promise hook on every promise of
 * the process, the worker's page path included: main-thread CPU per warm 1 MiB page request 469 →
 * 625 µs with one AsyncLocalStorage enabled, one run of bench/page-hits.mjs on a loaded machine),
 * so a new connect, or a client's close, ends every pending connect to those endpoints: another
 * gRPC client's reconnects (grpc-js backs off 0.1-1 s). The JSON client's connects (lib/leanhttp)
 * are never ended here: they have their own deadline. Only connects still pending are ended: on a link that
 * works they last a round trip, so this only ever touches connects to an etcd that is not
 * answering.
 */
export class EndpointConnects {
  private readonly addresses = new Set<string>();

  constructor(endpoints: readonly string[]) {
    watchConnects();
    for (const endpoint of endpoints) {
      const url = new URL(endpoint);
      const port = url.port || (url.protocol === 'https:' ? '443' : '80');
      const host = url.hostname.replace(/^\[|\]$/g, '');
      if (isIP(host)) this.watch(`${host}:${port}`);
      // grpc-js connects to the addresses it resolved: those of the name are watched once known.
      else lookup(host, { all: true }, (err, found) => !err && found.forEach((a) => this.watch(`${a.address}:${port}`)));
    }
  }

  /** Ends the connects to these endpoints still pending; stops watching for new ones. */
  close(): void {
    for (const address of this.addresses) {
      const left = (destinations.get(address) ?? 1) - 1;
      if (left > 0) destinations.set(address, left);
      else destinations.delete(address);
    }
    for (const [socket, address] of connecting) {
      if (this.addresses.has(address)) {
        connecting.delete(socket);
        socket.destroy();
      }
    }
    this.addresses.clear();
  }

  private watch(address: string): void {
    if (this.addresses.has(address)) return;
    this.addresses.add(address);
    destinations.set(address, (destinations.get(address) ?? 0) + 1);
  }
}

/** Addresses (ip:port) of the endpoints of the open clients, with how many clients name each. */
const destinations = new Map<string, number>();
/** Sockets connecting to one of them, with that address. */
const connecting = new Map<Socket, string>();
let watching = false;

function watchConnects(): void {
  if (watching) return;
  watching = true;
  subscribe('net.client.socket', onSocket);
}

// Shared listeners (the socket is `this`): nothing is made per connection but the listener entries.
function onSocket(message: unknown): void {
  if (destinations.size > 0) (message as { socket: Socket }).socket.once('connectionAttempt', onAttempt);
}

function onAttempt(this: Socket, ip: string, port: number): void {
  const address = `${ip}:${port}`;
  // The JSON client's connects (lib/leanhttp) have a deadline of their own, and one ended here
  // would wait it out (its socket closes before 'connect', with no error it listens for).
  if (!destinations.has(address) || isLeanSocket(this)) return;
  // The newest connect to an endpoint ends those still pending: a client's own channels start a
  // new one after each failed call (etcd3 closes them, grpc-js drops their subchannel), and the
  // older ones, whose next SYN the kernel sends up to 32 s later, would reach etcd no sooner.
  for (const [older, to] of connecting) {
    if (to !== address) continue;
    connecting.delete(older);
    older.destroy();
  }
  connecting.set(this, address);
  this.once('connect', forget);
  this.once('close', forget);
}

function forget(this: Socket): void {
  connecting.delete(this);
}
