import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FanoutError } from '../../core/errors.js';
import { FanoutUfs } from './fanout.js';
import { HttpUfs } from './http.js';
import { LocalUfs } from './local.js';
import { S3Ufs } from './s3.js';
import type { S3SourceOptions, SourceOptions, Ufs } from './types.js';

export type { Ufs, ListOptions, S3SourceOptions, SkipReason, SkippedEntry, SourceOptions, SourceDeadlines, Versioning } from './types.js';
export { DEFAULT_DEADLINES } from './deadlines.js';
export { LocalUfs, localVersion } from './local.js';
export { S3Ufs, s3ClientConfig } from './s3.js';
export { HttpUfs, type HttpUfsOptions } from './http.js';
export { releaseSourceChunk } from './chunks.js';
export { FanoutUfs, parseFanoutUri, type FanoutSourceAddress } from './fanout.js';
export type { RemoteCluster } from './fanout-client.js';
export type { RemoteSourceOptions } from './types.js';

/**
 * Opens a source from its URI, as written in a mount's configuration:
 *   /abs/dir, rel/dir, file:///abs/dir   a local or shared directory
 *   s3://bucket[/prefix]                  an S3 bucket (endpoint and keys in s3Options or env)
 *   http(s)://host[/prefix]               files under a URL (stat and read only)
 *   fanout(s)://host:port[,…]/mount[/prefix]  a mount of another fanout cluster (fanout.ts)
 * `source`: how errors name files (a mount path), versioning (HTTP), deadlines (HTTP, S3).
 */
export function openUfs(uri: string, s3Options?: S3SourceOptions, source: SourceOptions = {}): Ufs {
  if (typeof uri !== 'string' || uri.trim() === '') {
    throw new FanoutError('INVALID_CONFIG', 'a source URI is required (a directory, s3://bucket/prefix or http(s)://...)');
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(uri)?.[1]?.toLowerCase();
  if (scheme === undefined) return new LocalUfs(resolve(uri), source);
  switch (scheme) {
    case 'file': {
      let dir: string;
      try {
        dir = fileURLToPath(uri);
      } catch (err) {
        throw new FanoutError('INVALID_CONFIG', `invalid file URI ${uri}: use file:///absolute/dir`, { cause: err });
      }
      return new LocalUfs(dir, source);
    }
    case 's3': {
      const match = /^s3:\/\/([^/?#]+)(?:\/([^?#]*))?$/i.exec(uri);
      const bucket = match?.[1];
      if (!bucket || !/^[A-Za-z0-9._-]{1,255}$/.test(bucket)) {
        throw new FanoutError('INVALID_CONFIG', `invalid S3 URI ${uri}: use s3://bucket/optional/prefix`);
      }
      let prefix: string;
      try {
        prefix = decodeURIComponent(match?.[2] ?? '');
      } catch (err) {
        throw new FanoutError('INVALID_CONFIG', `invalid S3 URI ${uri}: malformed percent-encoding`, { cause: err });
      }
      if (prefix.split('/').some((s) => s === '.' || s === '..')) {
        throw new FanoutError('INVALID_CONFIG', `invalid S3 URI ${uri}: "." and ".." are not allowed in the prefix`);
      }
      return new S3Ufs(bucket, prefix, s3Options, undefined, source);
    }
    case 'http':
    case 'https':
      return new HttpUfs(uri, source);
    case 'fanout':
    case 'fanouts':
      return new FanoutUfs(uri, source);
    default:
      throw new FanoutError('INVALID_CONFIG', `unsupported source URI scheme "${scheme}" in ${uri} (use a path, file://, s3://, http(s):// or fanout(s)://)`);
  }
}
