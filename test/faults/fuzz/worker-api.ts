import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { ADMIN_TOKEN, PAGE_SIZE, type SourceFile } from './fixture.js';
import { answered, checkWorkerError, crcHex, sameBytes } from './checks.js';
import { conditionalArb, garbageAuthorization, rangeArb, rangeMeaning, satisfiableRangeArb } from './headers.js';
import { decodedPath, encodePath, pathArb, type GeneratedPath } from './paths.js';
import type { Outcome, RawRequest } from './send.js';

/**
 * The worker's HTTP API under generated requests: every route, method, path, page query and
 * header, with and without credentials. 2xx answers from /v1/page, /v1/data and /v1/stat are
 * compared with the source files byte for byte.
 */

export type Auth = { kind: 'token' } | { kind: 'none' } | { kind: 'garbage'; value: string };

/**
 * Every header of every worker API request is built here, so credentials are added in one place
 * (Authorization: Bearer TOKEN once the worker checks tokens; ADMIN_TOKEN is in the fixture).
 */
export function workerHeaders(generated: [string, string][], auth: Auth): [string, string][] {
  const headers = generated.filter(([name]) => name.toLowerCase() !== 'authorization');
  if (auth.kind === 'token') headers.push(['authorization', `Bearer ${ADMIN_TOKEN}`]);
  if (auth.kind === 'garbage') headers.push(['authorization', auth.value]);
  return headers;
}

export const authArb: fc.Arbitrary<Auth> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<Auth>({ kind: 'token' }) },
  { weight: 2, arbitrary: fc.constant<Auth>({ kind: 'none' }) },
  { weight: 1, arbitrary: garbageAuthorization.map((value): Auth => ({ kind: 'garbage', value })) },
);

export interface SourceView {
  mounts: string[];
  /** mount → path → file */
  files: Map<string, Map<string, SourceFile>>;
}

const ROUTES = ['/v1/page', '/v1/data', '/v1/stat', '/v1/list'] as const;
const PLAIN_ROUTES = ['/healthz', '/metrics', '/v1/cluster', '/v1/status', '/v1/list', '/v1/list/', '/', '/v1', '/v1/', '/v1/pages/x', '/v1/admin/policy', '/healthz/', '/v1/data'];

export interface WorkerSpec {
  method: string;
  route: string;
  path?: GeneratedPath;
  query: string;
  headers: [string, string][];
  auth: Auth;
}

function queryValue(values: string[]): fc.Arbitrary<string | undefined> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...values) },
    { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 2, arbitrary: fc.constantFrom('', '-1', '1.5', '1e3', '0x10', ' 1', '00', '9007199254740993', '99999999999999999', 'NaN', '%zz', '%00') },
    { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
  );
}

/** v, size, i and h for a page request of a known file: right and wrong values, missing and repeated ones. */
function pageQueryArb(file: SourceFile): fc.Arbitrary<string> {
  const pages = Math.max(1, Math.ceil(file.data.length / PAGE_SIZE));
  const sha = (i: number) => createHash('sha256').update(file.data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)).digest('hex');
  return fc
    .record({
      v: queryValue([file.version, file.version, file.version, 'other-version', 'x'.repeat(2000)]),
      size: queryValue([String(file.data.length), String(file.data.length), String(file.data.length + 1), String(Math.max(0, file.data.length - 1)), '0', String(PAGE_SIZE * 3)]),
      i: queryValue(Array.from({ length: pages + 2 }, (_, i) => String(i))),
      h: fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom(sha(0), 'f'.repeat(64), 'F'.repeat(64), 'abc') }),
      extra: fc.constantFrom('', '', '', '&i=0', '&v=', '&&', '&x=1', '&size'),
    })
    .map(({ extra, ...q }) => {
      const parts = Object.entries(q)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${/%/.test(v!) ? v : encodeURIComponent(v!)}`);
      return '?' + parts.join('&') + extra;
    });
}

export function workerRequestArb(view: SourceView): fc.Arbitrary<WorkerSpec> {
  const knownPaths = [...new Set([...view.files.values()].flatMap((m) => [...m.keys()]))];
  const anyFile = [...view.files.get(view.mounts[0]!)!.values()];
  const method = fc.oneof({ weight: 12, arbitrary: fc.constant('GET') }, { weight: 3, arbitrary: fc.constant('HEAD') }, { weight: 2, arbitrary: fc.constantFrom('POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'PROPFIND') });
  // The query and the Range are drawn for the file the path names (when it names one), so
  // right versions, sizes and ranges are common, not luck.
  // Built once per file: building them per generated value (hashing pages) dominated a run.
  const perFile = new Map<SourceFile, fc.Arbitrary<{ query: string; headers: [string | undefined, [string, string][], [string, string][]] }>>();
  const forFile = (file: SourceFile) => {
    let arb = perFile.get(file);
    if (!arb) {
      arb = fc.record({
        query: fc.oneof({ weight: 5, arbitrary: pageQueryArb(file) }, { weight: 1, arbitrary: fc.constantFrom('', '?', '?a=b', '?v') }),
        headers: fc.tuple(
          fc.option(rangeArb(file.data.length), { nil: undefined }),
          conditionalArb(file.version, Date.now()),
          fc.constantFrom<[string, string][]>([], [], [], [['x-fanout-direct', '1']], [['x-fanout-direct', '']], [['content-type', 'application/json']]),
        ),
      });
      perFile.set(file, arb);
    }
    return arb;
  };
  const routed = fc
    .tuple(method, fc.constantFrom(...ROUTES), pathArb(view.mounts, knownPaths), authArb)
    .chain(([m, route, path, auth]) => forFile(fileOf(view, path) ?? anyFile[0]!).map((rest) => ({ method: m, route, path, auth, ...rest })));
  const plain = fc.record({ method, route: fc.constantFrom(...PLAIN_ROUTES), query: fc.constantFrom('', '?x=1', '?' + 'q'.repeat(9000)), headers: fc.constant([[], [], []] as const), auth: authArb });
  return fc.oneof({ weight: 8, arbitrary: routed }, { weight: 3, arbitrary: validReadArb(view) }, { weight: 1, arbitrary: plain }).map((r) => {
    const [range, conditionals, extra] = r.headers as unknown as [string | undefined, [string, string][], [string, string][]];
    const headers: [string, string][] = [...conditionals, ...extra];
    if (range !== undefined) headers.push(['range', range]);
    return { method: r.method, route: r.route, path: 'path' in r ? r.path : undefined, query: r.query, headers, auth: r.auth };
  });
}

/**
 * Reads that should succeed (a file that exists, the right version and size, a range inside the
 * file), so many answers are 200/206 whose bytes can be compared, concurrently with the noise.
 */
function validReadArb(view: SourceView) {
  const files = [...view.files].flatMap(([mount, byPath]) => [...byPath.values()].map((file) => ({ mount, file })));
  return fc.constantFrom(...files).chain(({ mount, file }) => {
    const size = file.data.length;
    const pages = Math.max(1, Math.ceil(size / PAGE_SIZE));
    const range = satisfiableRangeArb(size);
    return fc.record({
      method: fc.constantFrom('GET', 'GET', 'GET', 'HEAD'),
      route: fc.constantFrom('/v1/data', '/v1/page'),
      path: fc.constant<GeneratedPath>({ segments: [mount, ...file.path.split('/')], encoding: 'standard', leadingSlashes: 0, trailingSlash: false }),
      query: fc.integer({ min: 0, max: pages - 1 }).map((i) => `?v=${encodeURIComponent(file.version)}&size=${size}&i=${i}`),
      headers: fc.tuple(fc.option(range, { nil: undefined }), fc.constant([] as [string, string][]), fc.constantFrom<[string, string][]>([], [['x-fanout-direct', '1']])),
      auth: fc.constant<Auth>({ kind: 'token' }),
    });
  });
}

export function toRawRequest(spec: WorkerSpec): RawRequest {
  const target = spec.route + (spec.path ? '/' + encodePath(spec.path).replace(/^\//, '') : '') + spec.query;
  return { method: spec.method, target, headers: workerHeaders(spec.headers, spec.auth) };
}

/** The source file a generated path names exactly, if any. */
function fileOf(view: SourceView, path: GeneratedPath | undefined): SourceFile | undefined {
  if (!path) return undefined;
  const decoded = decodedPath(path);
  if (decoded === undefined) return undefined;
  // Leading and trailing slashes are trimmed by the worker (core/paths.ts): "/data/a.txt/" is a.txt.
  const match = /^\/*([^/]+)\/(.+?)\/*$/.exec(decoded);
  if (!match) return undefined;
  return view.files.get(match[1]!)?.get(match[2]!);
}

/** What is wrong with the answer to one worker API request, or undefined. */
export function checkWorkerAnswer(view: SourceView, spec: WorkerSpec, outcome: Outcome): string | undefined {
  if (outcome.kind === 'network' && claimsPastTheEnd(view, spec)) return undefined;
  const res = answered(outcome);
  if (typeof res === 'string') return res.startsWith('(unsendable)') ? undefined : res;
  const error = checkWorkerError(res, spec.method);
  if (error || res.status >= 300) return error;
  const header = (name: string) => spec.headers.find(([k]) => k === name)?.[1];
  const file = fileOf(view, spec.path);
  if (spec.route === '/v1/data' && spec.path) {
    if (!file) return `${res.status} for /v1/data of a path that is no source file (${decodedPath(spec.path)})`;
    const range = header('range');
    // Several ranges, or another unit, get the whole file (200), as from the S3 gateway.
    const read = range === undefined || range.includes(',') ? undefined : rangeMeaning(range, file.data.length);
    const meaning = read?.kind === 'other-unit' ? undefined : read;
    if (meaning && meaning.kind !== 'range') return `${res.status} for Range "${range}" (${meaning.kind}) on a file of ${file.data.length} bytes`;
    const [start, end] = meaning ? [meaning.start, meaning.end] : [0, file.data.length];
    if (res.status !== (meaning ? 206 : 200)) return `status ${res.status} for ${range === undefined ? 'no Range' : `Range "${range}"`}`;
    if (meaning && res.headers['content-range'] !== `bytes ${start}-${end - 1}/${file.data.length}`) return `Content-Range "${String(res.headers['content-range'])}", expected bytes ${start}-${end - 1}/${file.data.length}`;
    if (Number(res.headers['content-length']) !== end - start) return `Content-Length ${String(res.headers['content-length'])}, expected ${end - start}`;
    if (spec.method === 'HEAD') return res.body.length === 0 ? undefined : 'HEAD with a body';
    return sameBytes(res.body, file.data.subarray(start, end), `/v1/data bytes ${start}-${end}`);
  }
  if (spec.route === '/v1/page' && spec.path && spec.method === 'GET') {
    if (!file) return `${res.status} for /v1/page of a path that is no source file`;
    const q = new URLSearchParams(spec.query.slice(1));
    const size = Number(q.get('size'));
    const index = Number(q.get('i'));
    const start = index * PAGE_SIZE;
    const end = Math.min(size, start + PAGE_SIZE);
    const crc = res.headers['x-fanout-crc32'] ?? res.trailers['x-fanout-crc32'];
    if (crc !== crcHex(res.body)) return `page checksum ${String(crc)} does not match its ${res.body.length} bytes (${crcHex(res.body)})`;
    const hash = q.get('h');
    // A content-addressed page may come from any file that has those bytes: its hash is what counts.
    if (hash !== null && createHash('sha256').update(res.body).digest('hex') === hash) return undefined;
    if (q.get('v') !== file.version) return `200 for a page of version "${q.get('v')?.slice(0, 40)}"; the file is at "${file.version}"`;
    if (end > file.data.length) return `200 for page ${index} of a claimed size ${size} past the file's ${file.data.length} bytes (${res.body.length} bytes sent)`;
    return sameBytes(res.body, file.data.subarray(start, end), `page ${index} (size ${size})`);
  }
  if (spec.route === '/v1/stat' && spec.path && spec.method === 'GET') {
    if (!file) return undefined; // directories answer IS_A_DIRECTORY, checked above; nothing else to compare
    const info = JSON.parse(res.body.toString()) as { size?: number; version?: string };
    if (info.size !== file.data.length || info.version !== file.version) return `stat says size ${info.size} version ${info.version}; the file has ${file.data.length} at ${file.version}`;
  }
  return undefined;
}

/**
 * A page asked for with a size larger than the file's: the source runs out part-way through a
 * fill that is already streaming, and a fill that fails mid-body is cut (the documented signal:
 * a truncated answer, never a short one that looks whole).
 */
function claimsPastTheEnd(view: SourceView, spec: WorkerSpec): boolean {
  const file = fileOf(view, spec.path);
  if (spec.route !== '/v1/page' || !file) return false;
  const q = new URLSearchParams(spec.query.slice(1));
  return q.get('v') === file.version && Number(q.get('size')) > file.data.length;
}
