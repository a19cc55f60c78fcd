import { readFileSync } from 'node:fs';
import { FanoutError } from '../../core/errors.js';

/** How to reach etcd: endpoints (http:// or https://), TLS material and password auth. */
export interface EtcdConnection {
  endpoints: string[];
  /** PEM files: the CA that signed etcd's certificate; a client certificate and key for --client-cert-auth. */
  tls?: { ca: string; cert?: string; key?: string };
  /** etcd user and password (exchanged for a token, and again when it expires). */
  auth?: { username: string; password: string };
}

/** Deadline of each etcd request when the caller gives none: an etcd that does not answer fails the call, it never hangs. */
export const DEFAULT_ETCD_TIMEOUT_MS = 3000;

/** A PEM file of the etcd connection, or INVALID_CONFIG naming it. */
export function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new FanoutError('INVALID_CONFIG', `cannot read the etcd ${what} ${file}: ${(err as Error).message}`);
  }
}
