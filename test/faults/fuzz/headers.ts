import fc from 'fast-check';

/**
 * Generated Range and conditional headers, and a reference reading of a Range header (RFC 9110
 * single byte range) that a 206 answer is checked against.
 */

const BIG = ['9007199254740991', '9007199254740992', '99999999999999999999', '1e3', '0x10', '-0'];

function bound(size: number): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 0, max: Math.max(0, size + 2) }).map(String) },
    { weight: 2, arbitrary: fc.constantFrom(String(size), String(size - 1), String(size + 1), '0', '1') },
    { weight: 1, arbitrary: fc.constantFrom(...BIG) },
    { weight: 1, arbitrary: fc.constantFrom('', ' ', 'a', '-1', '+5', '1.5') },
  );
}

/** Every form: single, open-ended, suffix, reversed, multi-range, huge, other units, garbage. */
export function rangeArb(size: number): fc.Arbitrary<string> {
  const single = fc.tuple(bound(size), bound(size)).map(([a, b]) => `bytes=${a}-${b}`);
  const open = bound(size).map((a) => `bytes=${a}-`);
  const suffix = bound(size).map((b) => `bytes=-${b}`);
  const multi = fc.array(fc.tuple(bound(size), bound(size)), { minLength: 2, maxLength: 4 }).map((rs) => 'bytes=' + rs.map(([a, b]) => `${a}-${b}`).join(','));
  const odd = fc.constantFrom('bytes=', 'bytes=-', 'bytes 0-1', 'items=0-1', 'BYTES=0-1', ' bytes=0-1 ', 'bytes=0-1,', 'bytes==0-1', 'bytes=--1', '', 'bytes=0-0,-1');
  return fc.oneof(
    { weight: 4, arbitrary: single },
    { weight: 2, arbitrary: open },
    { weight: 2, arbitrary: suffix },
    { weight: 1, arbitrary: multi },
    { weight: 1, arbitrary: odd },
    { weight: 1, arbitrary: fc.string({ maxLength: 30 }).map((s) => s.replace(/[^\x20-\x7e]/g, '')) },
  );
}

export type RangeMeaning = { kind: 'range'; start: number; end: number } | { kind: 'unsatisfiable' } | { kind: 'not-a-single-range' } | { kind: 'other-unit' };

/**
 * What a Range header means for a file of `size` bytes (end exclusive). The unit's name is
 * case-insensitive; a header in another unit is ignored (RFC 9110 §14.1, §14.2).
 */
export function rangeMeaning(header: string, size: number): RangeMeaning {
  const unit = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)=/.exec(header.trim());
  if (unit && unit[1]!.toLowerCase() !== 'bytes') return { kind: 'other-unit' };
  const m = /^bytes=(\d*)-(\d*)$/i.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'not-a-single-range' };
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'range', start: Math.max(0, size - suffix), end: size };
  }
  const start = Number(m[1]);
  if (m[2] !== '' && Number(m[2]) < start) return { kind: 'not-a-single-range' };
  if (start >= size) return { kind: 'unsatisfiable' };
  const last = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return { kind: 'range', start, end: last + 1 };
}

/** If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range: right, wrong and garbage values. */
export function conditionalArb(etag: string, mtimeMs: number): fc.Arbitrary<[string, string][]> {
  const httpDate = (ms: number) => new Date(ms).toUTCString();
  const etagValue = fc.constantFrom(`"${etag}"`, `W/"${etag}"`, '*', '"nope"', `"${etag}", "other"`, 'garbage', '""', etag);
  const dateValue = fc.oneof(
    fc.constantFrom(httpDate(mtimeMs), httpDate(mtimeMs - 5000), httpDate(mtimeMs + 5000), httpDate(0), 'not a date', 'Mon, 32 Foo 99999 99:99:99 GMT', ''),
    fc.integer({ min: -8.64e15, max: 8.64e15 }).map(httpDate),
  );
  const one = fc.oneof(
    etagValue.map((v): [string, string] => ['if-match', v]),
    etagValue.map((v): [string, string] => ['if-none-match', v]),
    dateValue.map((v): [string, string] => ['if-modified-since', v]),
    dateValue.map((v): [string, string] => ['if-unmodified-since', v]),
    fc.oneof(etagValue, dateValue).map((v): [string, string] => ['if-range', v]),
  );
  return fc.array(one, { maxLength: 3 });
}

/** Authorization values that are not credentials this worker knows. */
export const garbageAuthorization = fc.oneof(
  fc.constantFrom('Bearer', 'Bearer ', 'Bearer x', 'Basic Zm9vOmJhcg==', 'bearer  a b c', 'Bearer ' + 'A'.repeat(6000), 'AWS4-HMAC-SHA256', 'Negotiate ,,,', '\t'),
  fc.string({ maxLength: 60 }).map((s) => s.replace(/[^\x20-\x7e]/g, '')),
);

/** A Range header a file of `size` bytes can satisfy: a span, an open end, or a suffix. */
export function satisfiableRangeArb(size: number): fc.Arbitrary<string> {
  const inside = fc.integer({ min: 0, max: Math.max(0, size - 1) });
  return fc.oneof(
    fc.tuple(inside, inside).map(([a, b]) => `bytes=${Math.min(a, b)}-${Math.max(a, b)}`),
    inside.map((a) => `bytes=${a}-`),
    fc.integer({ min: 1, max: size + 10 }).map((n) => `bytes=-${n}`),
  );
}
