import fc from 'fast-check';

/**
 * Generated URL paths: the files that exist (so some requests reach the data code), and every
 * kind of hostile or odd path: traversal (plain and percent-encoded), encoded slashes, NUL and
 * control characters, backslashes, empty segments, overlong names, unicode, malformed escapes.
 * A path is generated as logical segments, then written on the request line by one of several
 * encoders (the same text can arrive many ways).
 */

const HOSTILE_SEGMENTS = ['..', '.', '', '...', '%', '\0', '\\', '..\\..', '\n', '\r\n', ' ', '~', '%00', '%2e%2e', '?', '#', ';', '*'];

/** One path segment, before encoding. */
function segmentArb(knownNames: string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...knownNames) },
    { weight: 3, arbitrary: fc.constantFrom(...HOSTILE_SEGMENTS) },
    { weight: 2, arbitrary: fc.string({ maxLength: 12 }) },
    { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 8 }) },
    // Any code points, lone surrogates included (fc.string's 'binary' unit costs seconds to set up).
    { weight: 1, arbitrary: fc.array(fc.integer({ min: 0, max: 0x10ffff }), { maxLength: 8 }).map((cps) => String.fromCodePoint(...cps)) },
    { weight: 1, arbitrary: fc.integer({ min: 256, max: 9000 }).map((n) => 'x'.repeat(n)) },
  );
}

export type Encoding = 'standard' | 'every-byte' | 'raw-ascii' | 'encoded-slashes' | 'broken-escapes' | 'latin1-raw';

export interface GeneratedPath {
  /** Logical segments (the first one is usually the mount). */
  segments: string[];
  encoding: Encoding;
  leadingSlashes: number;
  trailingSlash: boolean;
}

export function pathArb(mounts: string[], knownPaths: string[]): fc.Arbitrary<GeneratedPath> {
  const names = [...new Set(knownPaths.flatMap((p) => p.split('/')))];
  const known = fc.tuple(fc.constantFrom(...mounts), fc.constantFrom(...knownPaths)).map(([m, p]) => [m, ...p.split('/')]);
  const mountArb = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...mounts) },
    { weight: 1, arbitrary: fc.constantFrom('nosuchmount', 'DATA', '-bad', 'a'.repeat(80), '', '..', 'data.') },
  );
  const mutated = fc.tuple(mountArb, fc.array(segmentArb(names), { minLength: 0, maxLength: 5 })).map(([m, rest]) => [m, ...rest]);
  const spliced = fc
    .tuple(known, fc.nat(), fc.constantFrom(...HOSTILE_SEGMENTS))
    .map(([segs, at, bad]) => [...segs.slice(0, (at % segs.length) + 1), bad, ...segs.slice((at % segs.length) + 1)]);
  return fc.record({
    segments: fc.oneof({ weight: 5, arbitrary: known }, { weight: 4, arbitrary: mutated }, { weight: 2, arbitrary: spliced }),
    encoding: fc.constantFrom<Encoding>('standard', 'standard', 'standard', 'every-byte', 'raw-ascii', 'encoded-slashes', 'broken-escapes', 'latin1-raw'),
    leadingSlashes: fc.constantFrom(0, 0, 0, 0, 1, 2),
    trailingSlash: fc.boolean(),
  });
}

/** The path as written on the request line (without the route prefix's slash). */
export function encodePath(p: GeneratedPath): string {
  const body = encodeSegments(p.segments, p.encoding);
  return '/'.repeat(p.leadingSlashes) + body + (p.trailingSlash ? '/' : '');
}

function encodeSegments(segments: string[], encoding: Encoding): string {
  switch (encoding) {
    case 'standard':
      return segments.map(encodeURIComponent_).join('/');
    case 'every-byte':
      return segments.map((s) => [...Buffer.from(s, 'utf8')].map((b) => '%' + b.toString(16).padStart(2, '0')).join('')).join('/');
    case 'raw-ascii':
      // Printable ASCII as is (including "%", "?" and "#", which change how the line is read).
      return segments.map((s) => s.replace(/[^\x21-\x7e]/g, (c) => encodeURIComponent_(c))).join('/');
    case 'encoded-slashes':
      return segments.map(encodeURIComponent_).join('%2F');
    case 'broken-escapes':
      return segments.map((s, i) => encodeURIComponent_(s) + (i % 2 === 0 ? '%zz' : '%e9%')).join('/');
    case 'latin1-raw':
      // Bytes 0x80-0xff straight on the request line (node:http sends the string as Latin-1).
      return segments.map((s) => encodeURIComponent_(s).replace(/%C3%A9/g, '\u00e9')).join('/') + '\u00ff';
  }
}

/** encodeURIComponent that cannot throw: a lone surrogate becomes an (invalid UTF-8) escape. */
function encodeURIComponent_(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    return [...s].map((c) => (/[\ud800-\udfff]/.test(c) ? '%ED%A0%80' : encodeURIComponent(c))).join('');
  }
}

/** The decoded path the request names, when it decodes; what a checker compares with the source. */
export function decodedPath(p: GeneratedPath): string | undefined {
  try {
    // A raw "?" (raw-ascii encoding) starts the query: the path the server sees ends there.
    return decodeURIComponent(encodePath(p).split('?')[0]!);
  } catch {
    return undefined;
  }
}
