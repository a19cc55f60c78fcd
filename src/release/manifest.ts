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

const HEX64 = /^[0-9a-f]{64}$/;
const hex64 = z.string().regex(HEX64, 'a lowercase hex SHA-256');
const CONTROL_OR_BACKSLASH = /[\u0000-\u001f\\]/;

/** The longest name of one path segment, in bytes (NAME_MAX of Linux's file systems). */
const MAX_SEGMENT_BYTES = 255;

/**
 * A relative path without ".", ".." or empty segments, control characters or backslashes, and
 * no segment longer than a file name can be.
 */
function isRelPath(p: string): boolean {
  return (
    !p.startsWith('/') &&
    !CONTROL_OR_BACKSLASH.test(p) &&
    p.split('/').every((s) => s !== '' && s !== '.' && s !== '..' && (s.length * 3 <= MAX_SEGMENT_BYTES || Buffer.byteLength(s) <= MAX_SEGMENT_BYTES))
  );
}

const relPath = z.string().min(1).max(4096).refine(isRelPath, { message: `a relative path without ".", ".." or empty segments, no segment over ${MAX_SEGMENT_BYTES} bytes` });

/**
 * The largest manifest a host reads (≈ 300,000 files of a few pages each): a manifest is parsed
 * whole, so this bounds a sync agent's memory whatever is published. Publishing refuses larger ones.
 */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

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

/**
 * What no field's schema can see: a path listed twice, a page count that is not the size's, a
 * file that is also another's directory ("a" and "a/b": it could not be installed). Each problem
 * is reported; `report` returning true stops the search (the fast check wants only the first).
 */
function structureProblems(files: readonly { path: string; size: number; pages: readonly string[] }[], pageSize: number, report: (path: (string | number)[], message: string) => boolean | void): void {
  const seen = new Set<string>();
  for (const [i, f] of files.entries()) {
    if (seen.has(f.path) && report(['files', i, 'path'], `duplicate path ${f.path}`)) return;
    seen.add(f.path);
    if (f.pages.length !== pageCount(f.size, pageSize) && report(['files', i, 'pages'], `${f.path}: ${f.pages.length} page hashes for ${f.size} bytes`)) return;
  }
  for (const f of files) {
    for (let slash = f.path.indexOf('/'); slash !== -1; slash = f.path.indexOf('/', slash + 1)) {
      const dir = f.path.slice(0, slash);
      if (seen.has(dir) && report(['files'], `${dir} is both a file and a directory`)) return;
    }
  }
}

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
  .superRefine((m, ctx) => structureProblems(m.files, m.pageSize, (path, message) => void ctx.addIssue({ code: z.ZodIssueCode.custom, path, message })));

const MANIFEST_KEYS = ['schema', 'name', 'version', 'createdAt', 'mount', 'prefix', 'pageSize', 'files'];
const isString = (v: unknown, min = 0, max = Infinity): v is string => typeof v === 'string' && v.length >= min && v.length <= max;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function isManifestFile(f: unknown): boolean {
  if (!isObject(f) || Object.keys(f).length !== 5) return false;
  const { path, size, sourceVersion, sha256, pages } = f;
  return (
    isString(path, 1, 4096) &&
    isRelPath(path) &&
    typeof size === 'number' &&
    Number.isInteger(size) &&
    size >= 0 &&
    isString(sourceVersion, 1, 1024) &&
    isString(sha256) &&
    HEX64.test(sha256) &&
    Array.isArray(pages) &&
    pages.every((h) => isString(h) && HEX64.test(h))
  );
}

/**
 * The parsed JSON itself when it certainly is a valid manifest, else undefined (then the schema
 * says what is wrong). The same rules as manifestSchema, without its per-field objects: zod took
 * 55–75 ms for a 2,000-file manifest, on the path of every sync and of the worker's first
 * content-keyed request; this takes a few. A property test holds the two to the same answers.
 */
export function validManifest(json: unknown): Manifest | undefined {
  if (!isObject(json) || Object.keys(json).length !== MANIFEST_KEYS.length || !MANIFEST_KEYS.every((k) => Object.hasOwn(json, k))) return undefined;
  const { schema, name, version, createdAt, mount, prefix, pageSize, files } = json;
  if (schema !== 1 || !isString(name) || !RELEASE_NAME.test(name) || !isString(version) || !VERSION_NAME.test(version)) return undefined;
  if (!isString(createdAt) || !isString(mount, 1) || !isString(prefix)) return undefined;
  if (typeof pageSize !== 'number' || !Number.isInteger(pageSize) || pageSize <= 0) return undefined;
  if (!Array.isArray(files) || !files.every(isManifestFile)) return undefined;
  let problem = false;
  structureProblems(files as ManifestFile[], pageSize, () => (problem = true));
  return problem ? undefined : (json as Manifest);
}

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
  checkManifestSize(Buffer.byteLength(bytes));
  if (expectedSha256 !== undefined && sha256Hex(bytes) !== expectedSha256) {
    throw new FanoutError('MANIFEST_INVALID', `manifest digest ${sha256Hex(bytes)} differs from the published ${expectedSha256}: it was changed after publishing`);
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString());
  } catch (err) {
    throw new FanoutError('MANIFEST_INVALID', `manifest is not JSON: ${(err as Error).message}`);
  }
  const valid = validManifest(json);
  if (valid) return valid;
  const result = manifestSchema.safeParse(json);
  if (!result.success) {
    const details = result.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new FanoutError('MANIFEST_INVALID', `invalid manifest: ${details}`);
  }
  return result.data;
}

/** MANIFEST_INVALID when a manifest of `bytes` is larger than any host reads. */
export function checkManifestSize(bytes: number): void {
  if (bytes > MAX_MANIFEST_BYTES) throw new FanoutError('MANIFEST_INVALID', `manifest of ${bytes} bytes is larger than the ${MAX_MANIFEST_BYTES} a host reads: split the release`);
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
