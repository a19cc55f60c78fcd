import { createHash } from 'node:crypto';
import type { Manifest } from './manifest.js';

/** For tests: the SHA-256 of some bytes, in hex. */
export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** For tests: the manifest of release `app` at `version` holding `files` (path → bytes), in pages of `pageSize`. */
export function manifestOf(files: Record<string, Buffer>, version = 'v1', pageSize = 4096): Manifest {
  return {
    schema: 1,
    name: 'app',
    version,
    createdAt: new Date().toISOString(),
    mount: 'data',
    prefix: '',
    pageSize,
    files: Object.entries(files).map(([path, data]) => ({
      path,
      size: data.length,
      sourceVersion: 'x',
      sha256: sha(data),
      pages: Array.from({ length: Math.ceil(data.length / pageSize) }, (_, i) => sha(data.subarray(i * pageSize, (i + 1) * pageSize))),
    })),
  };
}
