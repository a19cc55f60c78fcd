import fc from 'fast-check';
import { answered, checkWorkerError } from './checks.js';
import { MOUNT, type SourceFile } from './fixture.js';
import type { Outcome, RawRequest } from './send.js';
import { authArb, workerHeaders, type Auth } from './worker-api.js';

/**
 * POST /v1/admin/* with generated bodies: any JSON value, bodies of the right shape with wrong
 * types inside, deep nesting, large bodies, non-JSON and non-UTF-8 bytes. Bodies are generated as
 * small descriptions and built only when sent, so a failure report stays readable.
 */

const ROUTES = ['load', 'pin', 'unpin', 'free', 'ttl', 'policy', 'nope', ''];

export type BodySpec =
  | { kind: 'json'; value: unknown }
  | { kind: 'deep'; depth: number; open: string; close: string }
  | { kind: 'large'; bytes: number; shape: 'keys' | 'string' | 'pages' }
  | { kind: 'raw'; text: string }
  | { kind: 'none' };

export interface AdminSpec {
  method: string;
  route: string;
  body: BodySpec;
  contentType: string | undefined;
  auth: Auth;
}

const hex = (n: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n });

function shapedBody(files: SourceFile[]): fc.Arbitrary<unknown> {
  const anything = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom(null, -1, 1e308, -0, '', [], {}, '__proto__', 'constructor'));
  const key = fc.oneof({ weight: 4, arbitrary: hex(40) }, { weight: 1, arbitrary: hex(64) }, { weight: 1, arbitrary: anything });
  const rule = fc.oneof(
    fc.record({ mount: fc.constantFrom(MOUNT, 'nosuch', ''), prefix: fc.constantFrom('', 'nested/', 'multi', '../', '/') }),
    fc.record({ mount: anything, prefix: anything }, { requiredKeys: [] }),
    anything,
  );
  const ref = fc.oneof(
    fc.constantFrom(...files).chain((f) =>
      fc.record(
        {
          mount: fc.constantFrom(MOUNT, MOUNT, 'nosuch'),
          path: fc.constantFrom(f.path, f.path, '../etc/passwd', '', 'a//b'),
          version: fc.constantFrom(f.version, f.version, 'stale', ''),
          size: fc.oneof(fc.constant(f.data.length), fc.integer({ min: -2, max: 2 ** 40 }), fc.constantFrom(Number.MAX_SAFE_INTEGER, 1.5)),
          index: fc.oneof(fc.integer({ min: -1, max: 4 }), fc.constantFrom(2 ** 31, Number.MAX_SAFE_INTEGER)),
          hash: fc.oneof(fc.constant(undefined), hex(64), fc.constant('XYZ')),
        },
        { requiredKeys: ['mount', 'path', 'version', 'size', 'index'] },
      ),
    ),
    anything,
  );
  return fc.record(
    {
      keys: fc.oneof(fc.array(key, { maxLength: 5 }), anything),
      rule,
      ttlMs: fc.oneof(fc.integer({ min: -5, max: 10_000_000 }), fc.constantFrom(0, 1, 'x', null, 1e308, Number.MAX_SAFE_INTEGER), anything),
      pages: fc.oneof(fc.array(ref, { maxLength: 4 }), anything),
      verify: fc.oneof(fc.boolean(), anything),
      // Rates under 64 KiB/s are refused (400); legal but slow ones would make a load crawl, and
      // the point here is odd values and types.
      rate: fc.oneof(fc.constantFrom(0, -1, 1, 65535, 'fast', null, 1e12, Number.NaN), anything.filter((v) => !(typeof v === 'number' && v >= 65536 && v < 1e9))),
    },
    { requiredKeys: [] },
  );
}

export function adminRequestArb(files: SourceFile[]): fc.Arbitrary<AdminSpec> {
  const body = fc.oneof(
    { weight: 6, arbitrary: shapedBody(files).map((value): BodySpec => ({ kind: 'json', value })) },
    { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((value): BodySpec => ({ kind: 'json', value })) },
    { weight: 1, arbitrary: fc.record({ depth: fc.integer({ min: 100, max: 50_000 }), open: fc.constantFrom('[', '{"keys":', '{"a":['), close: fc.constant('') }).map((d): BodySpec => ({ kind: 'deep', ...d, close: d.open === '[' ? ']' : d.open === '{"keys":' ? '}' : ']}' })) },
    { weight: 1, arbitrary: fc.record({ bytes: fc.constantFrom(64 * 1024, 64 * 1024, 64 * 1024, 1024 * 1024, 1024 * 1024, 17 * 1024 * 1024), shape: fc.constantFrom<'keys' | 'string' | 'pages'>('keys', 'string', 'pages') }).map((l): BodySpec => ({ kind: 'large', ...l })) },
    { weight: 1, arbitrary: fc.constantFrom('', '{', 'null', '[]', '"x"', '1', 'true', '\u00ff\u00fe', '{"keys":[1,2', '{}{}', '{"__proto__":{"keys":["x"]}}').map((text): BodySpec => ({ kind: 'raw', text })) },
    { weight: 1, arbitrary: fc.constant<BodySpec>({ kind: 'none' }) },
  );
  return fc.record({
    method: fc.oneof({ weight: 8, arbitrary: fc.constant('POST') }, { weight: 1, arbitrary: fc.constantFrom('GET', 'PUT', 'DELETE', 'HEAD') }),
    route: fc.constantFrom(...ROUTES),
    body,
    contentType: fc.constantFrom(undefined, 'application/json', 'text/plain', 'application/json; charset=latin1'),
    auth: authArb,
  });
}

function buildBody(spec: BodySpec): Buffer | undefined {
  switch (spec.kind) {
    case 'none':
      return undefined;
    case 'raw':
      return Buffer.from(spec.text, 'latin1');
    case 'json':
      return Buffer.from(JSON.stringify(spec.value) ?? 'null');
    case 'deep':
      return Buffer.from(spec.open.repeat(spec.depth) + spec.close.repeat(spec.depth));
    case 'large': {
      // Past 16 MiB the body is refused whatever it holds; below it, lists are kept short enough
      // that a run does not spend its time pinning keys or loading pages of a missing mount.
      const over = spec.bytes > 16 * 1024 * 1024;
      if (spec.shape === 'string' || over) return Buffer.from(JSON.stringify({ rule: { mount: MOUNT, prefix: 'p'.repeat(spec.bytes) } }));
      if (spec.shape === 'keys') return Buffer.from(JSON.stringify({ keys: Array.from({ length: 1500 }, (_, i) => i.toString(16).padStart(40, '0')) }));
      return Buffer.from(JSON.stringify({ pages: Array.from({ length: 300 }, () => ({ mount: 'nosuch', path: 'x', version: 'v', size: 1, index: 0 })) }));
    }
  }
}

export function adminToRaw(spec: AdminSpec): RawRequest {
  const body = buildBody(spec.body);
  const headers: [string, string][] = [];
  if (spec.contentType) headers.push(['content-type', spec.contentType]);
  return { method: spec.method, target: `/v1/admin/${spec.route}`, headers: workerHeaders(headers, spec.auth), body };
}

export function checkAdminAnswer(spec: AdminSpec, outcome: Outcome): string | undefined {
  // The worker stops reading a body over its 16 MiB limit and closes the connection after its
  // 413; a client still sending may see the close before the answer.
  if (outcome.kind === 'network' && spec.body.kind === 'large' && spec.body.bytes > 16 * 1024 * 1024) return undefined;
  const res = answered(outcome);
  if (typeof res === 'string') return res.startsWith('(unsendable)') ? undefined : res;
  const error = checkWorkerError(res, spec.method);
  if (error) return error;
  if (res.status === 200 && spec.method !== 'HEAD') {
    try {
      JSON.parse(res.body.toString());
    } catch {
      return `200 whose body is not JSON: ${res.body.subarray(0, 100)}`;
    }
  }
  return undefined;
}
