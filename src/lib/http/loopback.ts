import { isIP, type AddressInfo, type Server } from 'node:net';

/**
 * DNS rebinding: a web page on a name its owner then points at 127.0.0.1 is, for the browser,
 * the same origin as a server listening there, so the page can read what such a server answers
 * without credentials (a `fanout serve` with open reads). The browser still sends the page's own
 * name as Host. A server that only this machine can reach (listening on a loopback address)
 * therefore answers only requests addressed to a loopback name; one listening on another address
 * is a network service on purpose and answers any Host.
 */

/** 127.0.0.0/8 and ::1 (also IPv4-mapped, ::ffff:127.x.x.x): addresses only this machine reaches. */
export function isLoopbackAddress(address: string): boolean {
  if (isIP(address) === 4) return address.startsWith('127.');
  if (isIP(address) !== 6 || address.includes('%')) return false;
  // The URL parser writes an IPv6 address in its shortest form: [::1], and [::ffff:7f00:1] for ::ffff:127.0.0.1.
  const short = new URL(`http://[${address}]/`).hostname;
  return short === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(short);
}

/** Whether `server` listens on a loopback address only (to be asked once it listens). */
export function listensOnLoopbackOnly(server: Server): boolean {
  const address = server.address() as AddressInfo | string | null;
  return typeof address === 'object' && address !== null && isLoopbackAddress(address.address);
}

/**
 * Whether a Host header names this machine: localhost and its subdomains (which browsers resolve
 * to loopback themselves, never by DNS: RFC 6761), a 127.x.x.x address or [::1], with any port.
 * No other name, whatever it resolves to now: that is what a rebinding page sends.
 */
export function isLoopbackHost(host: string): boolean {
  const match = /^(\[[^\]]*\]|[^:[\]]*)(?::\d*)?$/.exec(host.trim());
  if (!match) return false;
  const name = match[1]!.toLowerCase();
  if (name.startsWith('[')) return isLoopbackAddress(name.slice(1, -1));
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  return isIP(name) === 4 && name.startsWith('127.');
}

/**
 * Why a server listening on a loopback address only refuses a request addressed to `host`, or
 * undefined when the Host names this machine (or there is none: HTTP/1.0, never a browser).
 * `what` names the server ("this worker", "this gateway").
 */
export function foreignHostRefusal(host: string | undefined, what: string): string | undefined {
  if (host === undefined || isLoopbackHost(host)) return undefined;
  return `Host "${host.slice(0, 200)}" is not a loopback name: ${what} listens on a loopback address only and answers requests addressed to localhost, *.localhost, 127.x.x.x or [::1]`;
}
