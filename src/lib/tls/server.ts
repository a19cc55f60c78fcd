import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { readFileSync, statSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { monotonicClock, type Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';

/** Certificate and key files of a server (PEM). */
export interface TlsFiles {
  cert: string;
  key: string;
}

export interface TlsPair {
  cert: Buffer;
  key: Buffer;
}

/** The part of a pino logger the reloader uses. */
export interface TlsLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

/** How often certificate files are checked for a change. Rotation tools (certbot, cert-manager) rewrite them in place. */
export const DEFAULT_TLS_RELOAD_MS = 10_000;

/**
 * Reads a certificate and its key and checks that they parse and belong together, so a bad
 * pair is refused here rather than at the next TLS handshake. INVALID_CONFIG names the file.
 */
export function readTlsPair(files: TlsFiles): TlsPair {
  // Synchronous: two small files, read at startup (in constructors) and on a change.
  const cert = readPem(files.cert, 'certificate');
  const key = readPem(files.key, 'key');
  try {
    new X509Certificate(cert);
  } catch (err) {
    throw new FanoutError('INVALID_CONFIG', `TLS certificate ${files.cert} cannot be parsed: ${(err as Error).message}`);
  }
  try {
    // OpenSSL checks here that the private key matches the certificate's public key.
    createSecureContext({ cert, key });
  } catch (err) {
    throw new FanoutError('INVALID_CONFIG', `TLS key ${files.key} does not fit certificate ${files.cert}: ${(err as Error).message}`);
  }
  return { cert, key };
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new FanoutError('INVALID_CONFIG', `cannot read TLS ${what} ${file}: ${(err as Error).message}`);
  }
}

/** A client that opens a connection and never completes the handshake is dropped after this (Node's default: 120 s). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * An HTTP server, or an HTTPS one when a certificate pair is given. Both are node:http
 * servers to their handler (https.Server extends tls.Server but emits the same 'request').
 */
export function createApiServer(handler: Handler, options: { keepAliveTimeout: number; tls?: TlsPair }): Server | HttpsServer {
  // Both APIs answer a missing Host with their own coded error (checkHostHeader), not node's bare 400.
  const common = { keepAliveTimeout: options.keepAliveTimeout, requireHostHeader: false };
  if (!options.tls) return createHttpServer(common, handler);
  return createHttpsServer({ ...common, handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS, cert: options.tls.cert, key: options.tls.key }, handler);
}

export interface CertificateReloaderOptions {
  files: TlsFiles;
  /** Installs a new pair (https.Server#setSecureContext); called only with a pair that passed readTlsPair. */
  apply(pair: TlsPair): void;
  logger?: TlsLogger;
  clock?: Clock;
  intervalMs?: number;
}

/**
 * Follows a certificate and key on disk: when either file changes (size, mtime or inode: an
 * atomic rename counts), the pair is read again and installed for new connections. A pair
 * that does not load (half-written, key of another certificate) is logged once and the
 * serving pair is kept; the next change is tried again, so writing the cert then the key
 * converges on the new pair.
 */
export class CertificateReloader {
  private readonly clock: Clock;
  private readonly intervalMs: number;
  private readonly stopping = new AbortController();
  /** One promise for the whole loop: a listener per round would pile up on the signal. */
  private readonly stopped = aborted(this.stopping.signal);
  private seen = '';
  private loop: Promise<void> | undefined;

  constructor(private readonly options: CertificateReloaderOptions) {
    this.clock = options.clock ?? monotonicClock;
    this.intervalMs = options.intervalMs ?? DEFAULT_TLS_RELOAD_MS;
    // Taken now, right after the server read its pair: a change before start() is not missed.
    this.seen = this.signature();
  }

  /** Starts polling the files. */
  async start(): Promise<void> {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.loop;
  }

  /** Checks the files once; true if a new pair was installed. */
  async check(): Promise<boolean> {
    const now = this.signature();
    if (now === this.seen) return false;
    this.seen = now;
    const { files, logger } = this.options;
    let pair: TlsPair;
    try {
      pair = readTlsPair(files);
    } catch (err) {
      logger?.warn({ err: (err as Error).message, cert: files.cert, key: files.key }, 'new TLS certificate not loaded; still serving the previous one');
      return false;
    }
    try {
      this.options.apply(pair);
    } catch (err) {
      logger?.warn({ err: (err as Error).message, cert: files.cert }, 'new TLS certificate refused by the server; still serving the previous one');
      return false;
    }
    logger?.info({ cert: files.cert, serial: new X509Certificate(pair.cert).serialNumber }, 'TLS certificate reloaded');
    return true;
  }

  private async run(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      try {
        await Promise.race([this.clock.sleep(this.intervalMs, this.stopping.signal), this.stopped]);
      } catch {
        return;
      }
      if (this.stopping.signal.aborted) return;
      await this.check().catch((err: unknown) => this.options.logger?.warn({ err: (err as Error).message }, 'TLS certificate check failed'));
    }
  }

  /** Identity of both files' current contents; synchronous, like readTlsPair (two stat calls). */
  private signature(): string {
    return [this.options.files.cert, this.options.files.key]
      .map((file) => {
        try {
          const s = statSync(file);
          return `${s.ino}:${s.size}:${s.mtimeMs}`;
        } catch {
          return 'missing';
        }
      })
      .join('|');
  }
}

/** Resolves when the signal aborts (ManualClock's sleep does not watch signals). */
function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}
