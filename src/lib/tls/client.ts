import { readFileSync } from 'node:fs';
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
  return ca ? { ca } : undefined;
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
