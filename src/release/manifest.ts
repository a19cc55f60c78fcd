import { createHash } from 'node:crypto';
import { z } from 'zod';
import { FanoutError } from '../core/errors.js';
import { pageCount } from '../core/pages.js';

/**
 * A release manifest: the immutable description of one version of a release. Every file is
 * listed with its size, the source version it was read at, the SHA-256 of each page (pages of
 * the cluster's page size) and of the whole file. The manifest's own SHA-256 is recorded in
 * etcd, so a manifest changed after publishing is detected before anything is installed.
 */
export const RELEASE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const VERSION_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;
/** Where manifests live in the source, below the mount's root. */
export const RESERVED_PREFIX = '.fanout-releases';

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'a lowercase hex SHA-256');
const relPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => !p.startsWith('/') && !/[\u0000-\u001f\\]/.test(p) && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..'), {
    message: 'a relative path without ".", ".." or empty segments',
  });

export const manifestFileSchema = z
  .object({
    path: relPath,
    size: z.number().int().nonnegative(),
    /** The source's version of the file when published (ETag or size-mtime): what pages are read at. */
    sourceVersion: z.string().min(1).max(1024),
    sha256: hex64,
    pages: z.array(hex64),
  })
  .strict();

export const manifestSchema = z
  .object({
    schema: z.literal(1),
    name: z.string().regex(RELEASE_NAME),
    version: z.string().regex(VERSION_NAME),
    createdAt: z.string(),
    mount: z.string().min(1),
    /** Directory inside the mount the release was published from ("" = the mount root). */
    prefix: z.string(),
    pageSize: z.number().int().positive(),
    files: z.array(manifestFileSchema),
  })
  .strict()
  .superRefine((m, ctx) => {
    const seen = new Set<string>();
    m.files.forEach((f, i) => {
      if (seen.has(f.path)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['files', i, 'path'], message: `duplicate path ${f.path}` });
      seen.add(f.path);
      if (f.pages.length !== pageCount(f.size, m.pageSize)) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['files', i, 'pages'], message: `${f.path}: ${f.pages.length} page hashes for ${f.size} bytes` });
      }
    });
    // A file may not also be a directory of another file ("a" and "a/b"): it could not be installed.
    for (const f of m.files) {
      const parts = f.path.split('/');
      for (let i = 1; i < parts.length; i++) {
        if (seen.has(parts.slice(0, i).join('/'))) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['files'], message: `${parts.slice(0, i).join('/')} is both a file and a directory` });
        }
      }
    }
  });

export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestFile = z.infer<typeof manifestFileSchema>;

export function checkReleaseName(name: string): void {
  if (!RELEASE_NAME.test(name)) throw new FanoutError('INVALID_ARGUMENT', `invalid release name "${name}" (use [a-z0-9][a-z0-9._-]*)`);
}

export function checkVersion(version: string): void {
  if (!VERSION_NAME.test(version)) throw new FanoutError('INVALID_ARGUMENT', `invalid version "${version}" (use [A-Za-z0-9][A-Za-z0-9._+-]*, ≤64 chars)`);
}

/** Parses and validates manifest bytes; anything wrong is MANIFEST_INVALID. */
export function parseManifest(bytes: Buffer | string, expectedSha256?: string): Manifest {
  if (expectedSha256 !== undefined && sha256Hex(bytes) !== expectedSha256) {
    throw new FanoutError('MANIFEST_INVALID', `manifest digest ${sha256Hex(bytes)} differs from the published ${expectedSha256}: it was changed after publishing`);
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString());
  } catch (err) {
    throw new FanoutError('MANIFEST_INVALID', `manifest is not JSON: ${(err as Error).message}`);
  }
  const result = manifestSchema.safeParse(json);
  if (!result.success) {
    const details = result.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new FanoutError('MANIFEST_INVALID', `invalid manifest: ${details}`);
  }
  return result.data;
}

/** Canonical bytes of a manifest (files sorted by path); their SHA-256 is the manifest digest. */
export function serializeManifest(manifest: Manifest): Buffer {
  const files = [...manifest.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return Buffer.from(JSON.stringify({ ...manifest, files }) + '\n');
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Hashes a file given as a stream of chunks: SHA-256 per page of `pageSize` bytes and of the
 * whole file. Chunks may straddle page boundaries; nothing is buffered beyond one chunk.
 */
export async function hashFile(chunks: AsyncIterable<Buffer>, pageSize: number): Promise<{ size: number; sha256: string; pages: string[] }> {
  const whole = createHash('sha256');
  const pages: string[] = [];
  let page = createHash('sha256');
  let inPage = 0;
  let size = 0;
  for await (const chunk of chunks) {
    whole.update(chunk);
    size += chunk.length;
    let offset = 0;
    while (offset < chunk.length) {
      const take = Math.min(pageSize - inPage, chunk.length - offset);
      page.update(chunk.subarray(offset, offset + take));
      inPage += take;
      offset += take;
      if (inPage === pageSize) {
        pages.push(page.digest('hex'));
        page = createHash('sha256');
        inPage = 0;
      }
    }
  }
  if (inPage > 0) pages.push(page.digest('hex'));
  return { size, sha256: whole.digest('hex'), pages };
}

export interface ManifestTotals {
  files: number;
  bytes: number;
  pages: number;
  uniquePages: number;
}

export function manifestTotals(manifest: Manifest): ManifestTotals {
  const unique = new Set<string>();
  let bytes = 0;
  let pages = 0;
  for (const f of manifest.files) {
    bytes += f.size;
    pages += f.pages.length;
    for (const h of f.pages) unique.add(h);
  }
  return { files: manifest.files.length, bytes, pages, uniquePages: unique.size };
}

/** The fanout path of a manifest file's bytes in the cluster: /MOUNT/PREFIX/PATH. */
export function sourcePathOf(manifest: Pick<Manifest, 'prefix'>, file: Pick<ManifestFile, 'path'>): string {
  return manifest.prefix ? `${manifest.prefix}/${file.path}` : file.path;
}

/** Where the manifest of NAME@VERSION is kept in the source, relative to the mount root. */
export function manifestLocation(name: string, version: string): string {
  return `${RESERVED_PREFIX}/${name}/${version}.json`;
}
