import { createServer } from 'node:net';
import { FanoutError } from '../core/errors.js';
import { ACCESS_KEY_RULE, ACCESS_KEY_TEXT, parseListen, type WorkerConfig } from '../lib/config/index.js';

/** The S3 gateway's part of `fanout serve` / `fanout worker`: flags, defaults, and what is printed on start. */

export const DEFAULT_S3_LISTEN = '127.0.0.1:7451';
/** For a laptop or a test box only; printed on start so nobody mistakes them for secrets. */
export const DEV_CREDENTIALS = { accessKeyId: 'FANOUTDEVACCESSKEY', secretAccessKey: 'fanout-dev-secret-key' };

export interface GatewayFlags {
  /** host:port, or "off". */
  s3Listen?: string;
  s3Anonymous?: boolean;
}

export interface GatewaySetup {
  /** The development keys were filled in (printed on start). */
  devKeys: boolean;
  /** The default port was busy and another one was taken. */
  movedFrom?: string;
}

/**
 * Applies --s3-listen/--s3-anonymous and FANOUT_S3_ACCESS_KEY/FANOUT_S3_SECRET_KEY to the config.
 * `serve` turns the gateway on by default (127.0.0.1:7451, or a free port if that one is taken)
 * with the development keys when no keys are configured; `worker` only when configured.
 */
export async function setupGateway(config: WorkerConfig, flags: GatewayFlags, serveDefaults: boolean): Promise<GatewaySetup> {
  const gateway = config.gateway;
  const setup: GatewaySetup = { devKeys: false };
  if (flags.s3Listen === 'off') {
    gateway.listen = undefined;
    return setup;
  }
  if (flags.s3Listen) {
    parseListen(flags.s3Listen);
    gateway.listen = flags.s3Listen;
  }
  if (flags.s3Anonymous) gateway.anonymous = true;
  const accessKeyId = process.env.FANOUT_S3_ACCESS_KEY;
  const secretAccessKey = process.env.FANOUT_S3_SECRET_KEY;
  if (Boolean(accessKeyId) !== Boolean(secretAccessKey)) {
    throw new FanoutError('INVALID_CONFIG', 'set both FANOUT_S3_ACCESS_KEY and FANOUT_S3_SECRET_KEY, or neither');
  }
  if (accessKeyId && !ACCESS_KEY_TEXT.test(accessKeyId)) {
    throw new FanoutError('INVALID_CONFIG', `FANOUT_S3_ACCESS_KEY must be ${ACCESS_KEY_RULE}`);
  }
  if (accessKeyId && secretAccessKey && !gateway.credentials.some((c) => c.accessKeyId === accessKeyId)) {
    gateway.credentials.push({ accessKeyId, secretAccessKey });
  }
  if (serveDefaults) {
    if (!gateway.listen) {
      gateway.listen = (await isFree(DEFAULT_S3_LISTEN)) ? DEFAULT_S3_LISTEN : '127.0.0.1:0';
      if (gateway.listen !== DEFAULT_S3_LISTEN) setup.movedFrom = DEFAULT_S3_LISTEN;
    }
    if (gateway.credentials.length === 0 && !gateway.anonymous) {
      gateway.credentials.push({ ...DEV_CREDENTIALS });
      setup.devKeys = true;
    }
  }
  if (gateway.listen && !gateway.anonymous && gateway.credentials.length === 0) {
    throw new FanoutError(
      'INVALID_CONFIG',
      'the S3 gateway has no credentials: add gateway.credentials to the config, set FANOUT_S3_ACCESS_KEY/FANOUT_S3_SECRET_KEY, or pass --s3-anonymous',
    );
  }
  return setup;
}

/** The lines printed under "listening on …" when the gateway is on. */
export function gatewayBanner(config: WorkerConfig, url: string | undefined, setup: GatewaySetup): string {
  if (!url) return '';
  const { gateway } = config;
  const bucket = Object.keys(config.mounts)[0] ?? 'BUCKET';
  let text = `  S3 gateway on ${url} (region ${gateway.region}, read-only${gateway.anonymous ? ', anonymous access on' : ''})\n`;
  if (setup.movedFrom) text += `    (${setup.movedFrom} was taken; use --s3-listen HOST:PORT to choose)\n`;
  if (setup.devKeys) {
    text +=
      `    access key ${DEV_CREDENTIALS.accessKeyId}, secret key ${DEV_CREDENTIALS.secretAccessKey} ` +
      `(development keys: set FANOUT_S3_ACCESS_KEY and FANOUT_S3_SECRET_KEY for your own)\n`;
    if (!isLoopback(gateway.listen ?? '')) text += '    WARNING: development keys on a non-loopback address\n';
    text +=
      `    try: AWS_ACCESS_KEY_ID=${DEV_CREDENTIALS.accessKeyId} AWS_SECRET_ACCESS_KEY=${DEV_CREDENTIALS.secretAccessKey} ` +
      `aws --endpoint-url ${url}${config.tls?.ca ? ` --ca-bundle ${config.tls.ca}` : ''} --region ${gateway.region} s3 ls s3://${bucket}/\n`;
  } else if (gateway.credentials.length > 0) {
    text += `    access keys: ${gateway.credentials.map((c) => c.accessKeyId).join(', ')}\n`;
  }
  return text;
}

function isLoopback(listen: string): boolean {
  const { host } = parseListen(listen);
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

function isFree(listen: string): Promise<boolean> {
  const { host, port } = parseListen(listen);
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, host, () => probe.close(() => resolve(true)));
  });
}
