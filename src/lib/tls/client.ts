import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { FanoutError } from '../../core/errors.js';

/**
 * The client side of TLS: which certificate authorities a client trusts for https:// workers.
 * Verification is always on; without a CA bundle, the system's trust store is used.
 */

/** A CA bundle as given by a user: a PEM file path, PEM text, or its bytes. */
export type CaOption = string | Buffer;

/** The PEM bytes of a CA option; `code` (INVALID_ARGUMENT, or INVALID_CONFIG for a config file's) naming the file if it cannot be read. */
export function readCa(ca: CaOption | undefined, code: 'INVALID_ARGUMENT' | 'INVALID_CONFIG' = 'INVALID_ARGUMENT'): Buffer | undefined {
  if (ca === undefined || ca === '') return undefined;
  if (Buffer.isBuffer(ca)) return ca;
  if (ca.includes('-----BEGIN')) return Buffer.from(ca);
  let pem: Buffer;
  try {
    pem = readFileSync(ca);
  } catch (err) {
    throw new FanoutError(code, `cannot read CA bundle ${ca}: ${(err as Error).message}`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new FanoutError(code, `CA bundle ${ca} holds no PEM certificate`);
  return pem;
}

/** undici connect options trusting `ca` (undefined: the defaults, i.e. the system store). */
export function tlsConnectOptions(ca: Buffer | undefined): { ca: Buffer } | undefined {
  return ca ? { ca } : deferredTrust();
}

/**
 * Where bin/fanout.js puts the NODE_EXTRA_CA_CERTS file it kept from Node's start (shared with
 * that CommonJS launcher by this global name). Node 20 builds its whole root store and parses that
 * file at every start, before any module: ≈ 40 ms of a 1-byte `fanout cat` here (0.147 → 0.103 s
 * without it), whether or not the command speaks TLS. So for its short commands the launcher keeps
 * the variable from Node, and their TLS clients add the file to Node's bundled roots themselves,
 * at their first https:// connection that brings no CA of its own.
 */
export const DEFERRED_EXTRA_CA = Symbol.for('fanout.deferredExtraCaCerts');

/** The roots built for the deferred file (once per process; the file does not change while it runs). */
let deferredRoots: { file: string; pem: Buffer } | undefined;

/**
 * The trust a TLS client without a CA of its own must be given: undefined (Node's default store)
 * unless the launcher deferred NODE_EXTRA_CA_CERTS, then Node's bundled roots and that file,
 * read at the first connection that needs them (`ca` is a getter: spreading these options into a
 * connection's does it), once per process.
 */
export function deferredTrust(): { ca: Buffer } | undefined {
  const file = (process as unknown as Record<symbol, unknown>)[DEFERRED_EXTRA_CA];
  if (typeof file !== 'string' || file === '') return undefined;
  return {
    get ca(): Buffer {
      if (deferredRoots?.file !== file) deferredRoots = { file, pem: defaultRootsWith(file) };
      return deferredRoots.pem;
    },
  };
}

/** What Node's default store holds with NODE_EXTRA_CA_CERTS=file: its bundled roots, then the file's certificates. */
function defaultRootsWith(file: string): Buffer {
  // node:tls only when a connection needs it (most short commands never load it).
  const { rootCertificates } = createRequire(import.meta.url)('node:tls') as typeof import('node:tls');
  let extra = '';
  try {
    extra = readFileSync(file, 'latin1');
  } catch (err) {
    // As Node does with an unreadable NODE_EXTRA_CA_CERTS: a warning, and the bundled roots alone.
    process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${(err as Error).message}`);
  }
  return Buffer.from(`${rootCertificates.join('\n')}\n${extra}`, 'latin1');
}

const CERTIFICATE_ERROR = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|HOSTNAME|ALTNAME/;

/**
 * A hint to append to a connection error caused by certificate verification, so that a user
 * who forgot --ca does not look for a network problem. Empty for any other error.
 */
export function certificateHint(err: unknown): string {
  let cause: unknown = err;
  for (let depth = 0; cause && depth < 4; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === 'string' && CERTIFICATE_ERROR.test(code)) {
      return " (TLS certificate not trusted: give its CA with --ca FILE or FANOUT_CA, or tls.ca in a worker's config)";
    }
    cause = (cause as { cause?: unknown }).cause;
  }
  return '';
}
