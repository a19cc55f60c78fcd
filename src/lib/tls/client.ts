import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { SecureContext } from 'node:tls';
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

/** What a client's TLS connections trust: a CA bundle of the user's, or a context built for them (deferredTrust). */
export type ClientTrust = { ca: Buffer } | { secureContext: SecureContext };

/**
 * TLS connect options (undici's, the lean client's) trusting `ca` (undefined: what Node's default
 * store trusts). undici reads them when it makes a client, http:// too: a deferred context is then
 * built, as Node would have built its store at start.
 */
export function tlsConnectOptions(ca: Buffer | undefined): ClientTrust | undefined {
  return ca ? { ca } : deferredTrust();
}

/**
 * Where bin/fanout.js puts the NODE_EXTRA_CA_CERTS file it kept from Node's start (shared with
 * that CommonJS launcher by this global name). Node 20 builds its whole root store and parses that
 * file at every start, before any module: ≈ 40 ms of a 1-byte `fanout cat` here (0.147 → 0.103 s
 * without it), whether or not the command speaks TLS. So for its short commands the launcher keeps
 * the variable from Node, and their TLS clients add the file to Node's roots themselves, at their
 * first https:// connection that brings no CA of its own.
 */
export const DEFERRED_EXTRA_CA = Symbol.for('fanout.deferredExtraCaCerts');

/** The deferred file, if the launcher kept one from Node. */
function deferredFile(): string | undefined {
  const file = (process as unknown as Record<symbol, unknown>)[DEFERRED_EXTRA_CA];
  return typeof file === 'string' && file !== '' ? file : undefined;
}

/** Built once per process for the deferred file (it does not change while a command runs). */
let deferred: { file: string; extra?: string; context?: SecureContext; pem?: Buffer } | undefined;
const builtFor = (file: string) => {
  if (deferred?.file !== file) deferred = { file };
  return deferred;
};
/** The file's text, read once (the context and the PEM both need it; one warning if it cannot be read). */
const extraOf = (file: string) => (builtFor(file).extra ??= readExtra(file));

/**
 * The trust a Node TLS client without a CA of its own must be given: undefined (Node's default
 * store) unless the launcher deferred NODE_EXTRA_CA_CERTS, then one context for every connection,
 * built at the first one that needs it (`secureContext` is a getter: spreading these options into
 * a connection's reads it): Node's default roots with the file's certificates added, as Node's own
 * store would have been. One context, because from a `ca` option tls.connect builds a context per
 * connection: ≈ 70 ms each for Node's roots and this machine's bundle (measured).
 */
export function deferredTrust(): { secureContext: SecureContext } | undefined {
  const file = deferredFile();
  if (!file) return undefined;
  return {
    get secureContext(): SecureContext {
      const built = builtFor(file);
      built.context ??= contextWith(file);
      return built.context;
    },
  };
}

/**
 * The same trust as PEM, for clients that build their own context from certificates (gRPC):
 * Node's bundled roots, then the file's certificates. Undefined unless the launcher deferred a file.
 */
export function deferredRootsPem(): Buffer | undefined {
  const file = deferredFile();
  if (!file) return undefined;
  const built = builtFor(file);
  built.pem ??= Buffer.from(`${tlsModule().rootCertificates.join('\n')}\n${extraOf(file)}`, 'latin1');
  return built.pem;
}

/** node:tls only when a connection needs it (most short commands never load it). */
const tlsModule = () => createRequire(import.meta.url)('node:tls') as typeof import('node:tls');

/**
 * Node's default context (its root store, built once per process in C++) with the file's
 * certificates added, as Node does with NODE_EXTRA_CA_CERTS at start. addCACert is the native
 * context's method that tls.createSecureContext itself calls for a `ca` option; where a Node lacks
 * it, the bundled roots and the file as a `ca` option (the same trust, parsed from PEM).
 */
function contextWith(file: string): SecureContext {
  const tls = tlsModule();
  const extra = extraOf(file);
  const context = tls.createSecureContext();
  if (extra === '') return context;
  const native = (context as unknown as { context?: { addCACert?: (pem: string) => void } }).context;
  if (typeof native?.addCACert !== 'function') return tls.createSecureContext({ ca: deferredRootsPem() });
  native.addCACert(extra); // every certificate of the PEM, into a copy of the shared root store
  return context;
}

/** The file's text; empty, with a warning as Node gives, if it cannot be read (Node then keeps its bundled roots alone). */
function readExtra(file: string): string {
  try {
    return readFileSync(file, 'latin1');
  } catch (err) {
    process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${(err as Error).message}`);
    return '';
  }
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
