import fc from 'fast-check';
import { answered, checkS3Error, sameBytes } from './checks.js';
import { S3_KEY, type SourceFile } from './fixture.js';
import { conditionalArb, rangeArb, rangeMeaning, satisfiableRangeArb } from './headers.js';
import { encodePath, pathArb, type GeneratedPath } from './paths.js';
import { bucketKeys, checkListPage, parseList } from './s3-list.js';
import { encodeQuery, signV4 } from './s3sign.js';
import type { Outcome, RawRequest } from './send.js';

/**
 * The S3 gateway under generated requests: mostly signed correctly (so they reach the bucket and
 * object code), some unsigned or badly signed (which must never get data). Object answers are
 * checked byte for byte, list answers against the source tree.
 */

export type Signing = 'v4' | 'none' | 'wrong-secret' | 'expired' | 'garbage-header' | 'garbage-presign' | 'garbage-v2';

export interface S3Spec {
  signing: Signing;
  method: string;
  /** undefined: the service (ListBuckets); segments[0] is the bucket. */
  path: GeneratedPath | undefined;
  virtualHost: boolean;
  query: [string, string][];
  /** Appended to the query string as is (malformed escapes…). */
  rawQuery: string;
  headers: [string, string][];
}

export interface S3View {
  buckets: string[];
  files: Map<string, Map<string, SourceFile>>;
  extraDirs: Map<string, string[]>;
  /** 127.0.0.1:PORT */
  host: string;
}

const text = fc.oneof(fc.string({ maxLength: 10 }), fc.string({ unit: 'grapheme', maxLength: 6 }));

function listQueryArb(keys: string[]): fc.Arbitrary<[string, string][]> {
  const prefixes = ['', 'nested/', 'nested/a', 'n', 'dir with space/', 'unicodé', 'a/', '/', 'nested//', '../', 'empty-dir/', ...keys];
  const param = fc.oneof(
    fc.constantFrom('2', '2', '2', '1', 'x').map((v): [string, string] => ['list-type', v]),
    fc.oneof(fc.constantFrom(...prefixes), text).map((v): [string, string] => ['prefix', v]),
    fc.oneof(fc.constantFrom('/', '/', '', 'a', '.', '//', 'é', ' '), text).map((v): [string, string] => ['delimiter', v]),
    fc.constantFrom('0', '1', '2', '3', '1000', '1001', '5000', '-1', 'abc', '99999999999', '').map((v): [string, string] => ['max-keys', v]),
    fc.oneof(fc.constantFrom(...keys).map((k) => Buffer.from('k' + k).toString('base64url')), fc.constantFrom('', 'x', '!!', 'cw', 'aGVsbG8', Buffer.from('s\u0000').toString('base64url')), text).map((v): [string, string] => ['continuation-token', v]),
    fc.oneof(fc.constantFrom(...keys), text).map((v): [string, string] => ['start-after', v]),
    fc.oneof(fc.constantFrom(...keys), text, fc.constant('nested/\u{10FFFF}')).map((v): [string, string] => ['marker', v]),
    fc.constantFrom('url', 'URL', 'xml').map((v): [string, string] => ['encoding-type', v]),
    fc.constantFrom<[string, string]>(['fetch-owner', 'true'], ['location', ''], ['acl', ''], ['versioning', ''], ['x-id', 'ListObjectsV2'], ['uploads', '']),
  );
  return fc.array(param, { maxLength: 5 });
}

const objectQueryArb: fc.Arbitrary<[string, string][]> = fc.array(
  fc.oneof(
    fc.constantFrom<[string, string]>(['versionId', 'null'], ['versionId', 'abc'], ['partNumber', '1'], ['partNumber', '2'], ['acl', ''], ['tagging', ''], ['uploadId', 'x'], ['x-id', 'GetObject']),
    text.map((v): [string, string] => ['response-content-type', v]),
    text.map((v): [string, string] => ['response-content-disposition', v]),
  ),
  { maxLength: 3 },
);

export function s3RequestArb(view: S3View): fc.Arbitrary<S3Spec> {
  const allKeys = [...new Set([...view.files.values()].flatMap((m) => [...m.keys()]))];
  const signing = fc.oneof(
    { weight: 12, arbitrary: fc.constant<Signing>('v4') },
    { weight: 1, arbitrary: fc.constantFrom<Signing>('none', 'wrong-secret', 'expired', 'garbage-header', 'garbage-presign', 'garbage-v2') },
  );
  const method = fc.oneof({ weight: 10, arbitrary: fc.constant('GET') }, { weight: 3, arbitrary: fc.constant('HEAD') }, { weight: 1, arbitrary: fc.constantFrom('PUT', 'DELETE', 'POST', 'OPTIONS') });
  // Header arbitraries are built once per file (or once for "no such file"), not per value.
  const perFile = new Map<SourceFile | undefined, fc.Arbitrary<[string, string][]>>();
  const headersFor = (file: SourceFile | undefined) => {
    let arb = perFile.get(file);
    if (!arb) {
      arb = fc
        .tuple(fc.option(rangeArb(file?.data.length ?? 100), { nil: undefined }), conditionalArb(file?.version ?? 'x', Date.now()))
        .map(([range, cond]) => (range === undefined ? cond : [...cond, ['range', range] as [string, string]]));
      perFile.set(file, arb);
    }
    return arb;
  };
  const object = fc.tuple(pathArb(view.buckets, allKeys), objectQueryArb).chain(([path, query]) =>
    headersFor(view.files.get(path.segments[0]!)?.get(path.segments.slice(1).join('/'))).map((headers) => ({ path: path as GeneratedPath | undefined, query, headers })),
  );
  const bucket = fc.record({
    path: fc.constantFrom(...view.buckets, 'nosuchbucket', 'Bad_Bucket').map((b): GeneratedPath | undefined => ({ segments: [b], encoding: 'standard', leadingSlashes: 0, trailingSlash: false })),
    query: listQueryArb(allKeys),
    headers: fc.constant<[string, string][]>([]),
  });
  const service = fc.record({ path: fc.constant(undefined), query: fc.constantFrom<[string, string][]>([], [['x-id', 'ListBuckets']]), headers: fc.constant<[string, string][]>([]) });
  return fc
    .record({
      signing,
      method,
      target: fc.oneof({ weight: 6, arbitrary: object }, { weight: 3, arbitrary: validObjectRead(view) }, { weight: 4, arbitrary: bucket }, { weight: 1, arbitrary: service }),
      virtualHost: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      rawQuery: fc.constantFrom('', '', '', '', '&%zz', '&a=%', '&=', '&&'),
    })
    .map(({ target, ...rest }) => ({ ...rest, ...target }));
}

/** The path on the request line and the Host header. */
function addressOf(view: S3View, spec: S3Spec): { rawPath: string; host: string } {
  let rawPath = spec.path ? encodePath(spec.path) : '/';
  if (!rawPath.startsWith('/')) rawPath = '/' + rawPath;
  if (!spec.virtualHost || !spec.path) return { rawPath, host: view.host };
  // bucket.localhost:PORT and the key alone in the path.
  const host = `${spec.path.segments[0]}.localhost:${view.host.split(':')[1]}`;
  return { rawPath: '/' + rawPath.replace(/^\/+/, '').split('/').slice(1).join('/'), host };
}

/** The bucket and key the gateway must read the request as (path style, or virtual-hosted when the Host names a bucket). */
function routeOf(view: S3View, spec: S3Spec): { bucket: string; key: string } | undefined {
  const { rawPath, host } = addressOf(view, spec);
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    return undefined;
  }
  const label = host.split('.')[0]!;
  if (host.includes('.') && view.buckets.includes(label) && !/^\d/.test(host)) return { bucket: label, key: path.slice(1) };
  const slash = path.indexOf('/', 1);
  return slash === -1 ? { bucket: path.slice(1), key: '' } : { bucket: path.slice(1, slash), key: path.slice(slash + 1) };
}

/** GetObject of a file that exists with a range inside it: answers whose bytes can be compared. */
function validObjectRead(view: S3View) {
  const files = [...view.files].flatMap(([bucket, byPath]) => [...byPath.values()].map((file) => ({ bucket, file })));
  return fc.constantFrom(...files).chain(({ bucket, file }) => {
    const size = file.data.length;
    const range = satisfiableRangeArb(size);
    return fc.record({
      path: fc.constant<GeneratedPath | undefined>({ segments: [bucket, ...file.path.split('/')], encoding: 'standard', leadingSlashes: 0, trailingSlash: false }),
      query: fc.constant<[string, string][]>([]),
      headers: fc.option(range, { nil: undefined }).map((r): [string, string][] => (r === undefined ? [] : [['range', r]])),
    });
  });
}

export function s3ToRaw(view: S3View, spec: S3Spec): RawRequest {
  const { rawPath, host } = addressOf(view, spec);
  const target = rawPath + (encodeQuery(spec.query) || (spec.rawQuery ? '?' : '')) + spec.rawQuery;
  let decoded: string;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    decoded = rawPath; // the gateway answers InvalidURI before it looks at the signature
  }
  const signable = { method: spec.method, path: decoded, query: spec.query, host, extra: spec.headers };
  const now = Date.now();
  let headers: [string, string][];
  switch (spec.signing) {
    case 'v4':
      headers = signV4(signable, now);
      break;
    case 'wrong-secret':
      headers = signV4(signable, now, { accessKeyId: S3_KEY.accessKeyId, secretAccessKey: 'not-the-secret' });
      break;
    case 'expired':
      headers = signV4(signable, now - 3600_000);
      break;
    case 'none':
      headers = [['host', host], ...spec.headers];
      break;
    case 'garbage-header':
      headers = [['host', host], ['authorization', 'AWS4-HMAC-SHA256 Credential=FUZZKEY/2024/x, SignedHeaders=host, Signature=00'], ['x-amz-content-sha256', 'UNSIGNED-PAYLOAD'], ...spec.headers];
      break;
    case 'garbage-v2':
      headers = [['host', host], ['authorization', `AWS ${S3_KEY.accessKeyId}:bm90IGEgc2lnbmF0dXJl`], ['date', new Date(now).toUTCString()], ...spec.headers];
      break;
    case 'garbage-presign':
      headers = [['host', host], ...spec.headers];
      return { method: spec.method, target: target + (target.includes('?') ? '&' : '?') + 'X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=FUZZKEY%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=99999999&X-Amz-SignedHeaders=host&X-Amz-Signature=00', headers };
  }
  return { method: spec.method, target, headers };
}

/** What is wrong with a gateway answer, or undefined. */
export function checkS3Answer(view: S3View, spec: S3Spec, outcome: Outcome): string | undefined {
  const res = answered(outcome);
  if (typeof res === 'string') return res.startsWith('(unsendable)') ? undefined : res;
  const error = checkS3Error(res, spec.method);
  if (error) return error;
  if (spec.signing !== 'v4' && res.status < 400) return `${res.status} for a request that is not signed with a known key (${spec.signing})`;
  if (res.status >= 300 && res.status !== 304) return undefined;
  const header = (name: string) => spec.headers.find(([k]) => k === name)?.[1];
  const conditional = spec.headers.some(([k]) => k.startsWith('if-'));
  if (res.status === 304 && !conditional) return '304 without a conditional header';
  if (res.status === 304 || !spec.path) return undefined;
  const route = routeOf(view, spec);
  if (!route) return `${res.status} for a path that does not decode`;
  if (route.bucket === '') return undefined; // ListBuckets
  const files = view.files.get(route.bucket);
  if (!files) return `${res.status} for bucket ${JSON.stringify(route.bucket)}, which is no mount`;
  const q = new Map<string, string>();
  for (const [k, v] of spec.query) if (!q.has(k)) q.set(k, v); // the gateway reads the first of repeated parameters
  if (route.key === '') {
    if (spec.method !== 'GET' || q.has('location')) return undefined;
    const maxKeys = Math.min(1000, Number(q.get('max-keys') ?? 1000));
    const answer = parseList(res.body.toString('utf8'), q.get('encoding-type') !== undefined);
    return checkListPage(answer, files, { prefix: q.get('prefix') ?? '', delimiter: q.get('delimiter') ?? '', maxKeys }, view.extraDirs.get(route.bucket) ?? []);
  }
  const file = files.get(route.key) ?? directoryMarker(files, view.extraDirs.get(route.bucket) ?? [], route.key);
  if (!file) return `${res.status} for key ${JSON.stringify(route.key)}, which is no file or directory`;
  const range = header('range');
  const meaning = range === undefined || q.has('partNumber') ? undefined : rangeMeaning(range, file.data.length);
  let [start, end] = [0, file.data.length];
  if (res.status === 206) {
    if (meaning?.kind !== 'range') return `206 for Range ${JSON.stringify(range)} (${meaning?.kind ?? 'none'})`;
    [start, end] = [meaning.start, meaning.end];
    if (res.headers['content-range'] !== `bytes ${start}-${end - 1}/${file.data.length}`) return `Content-Range ${String(res.headers['content-range'])} for ${range}`;
  } else if (meaning?.kind === 'range' && header('if-range') === undefined) {
    return `200 (whole object) for the satisfiable Range ${JSON.stringify(range)}`;
  } else if (meaning?.kind === 'unsatisfiable' && header('if-range') === undefined) {
    return `${res.status} for the unsatisfiable Range ${JSON.stringify(range)}`;
  }
  if (Number(res.headers['content-length']) !== end - start) return `Content-Length ${String(res.headers['content-length'])}, expected ${end - start}`;
  if (res.headers.etag !== `"${file.version}"`) return `ETag ${String(res.headers.etag)}, the file is at ${file.version}`;
  if (spec.method === 'HEAD') return res.body.length === 0 ? undefined : 'HEAD with a body';
  return sameBytes(res.body, file.data.subarray(start, end), `object bytes ${start}-${end}`);
}

/** A directory's key "dir/" is a zero-byte object (the marker S3 tools use for directories). */
function directoryMarker(files: Map<string, SourceFile>, emptyDirs: string[], key: string): SourceFile | undefined {
  if (!key.endsWith('/') || !(emptyDirs.includes(key) || bucketKeys(files).dirs.includes(key))) return undefined;
  return { path: key, data: Buffer.alloc(0), version: 'd41d8cd98f00b204e9800998ecf8427e' };
}
