import { connect } from 'node:net';
import fc from 'fast-check';

/**
 * Bytes on the wire that no HTTP client library would send: bad request lines, unknown versions,
 * raw control and Latin-1 bytes in the target, malformed or oversized headers, conflicting
 * framing (Content-Length with Transfer-Encoding, two lengths), broken chunked bodies. Each goes
 * on a fresh connection; the answer is read until the server closes or goes quiet.
 */
export interface RawSpec {
  method: string;
  target: string;
  version: string;
  headers: string[];
  body: string;
}

const targets = fc.oneof(
  fc.constantFrom('/healthz', '/v1/stat/data/hello.txt', '/v1/data/data/hello.txt', '/data/hello.txt', '/data?list-type=2', '*', '', 'http://x/healthz', '/v1/admin/free'),
  fc.string({ unit: 'binary-ascii', maxLength: 30 }).map((s) => '/' + s),
  fc.array(fc.integer({ min: 0x80, max: 0xff }), { maxLength: 4 }).map((bytes) => '/v1/stat/data/' + String.fromCharCode(...bytes)),
);

const headerLines = fc.array(
  fc.oneof(
    fc.constantFrom('content-length: 5', 'content-length: -1', 'content-length: 1, 2', 'content-length: 99999999999999999999', 'transfer-encoding: chunked', 'transfer-encoding: gzip, chunked', 'transfer-encoding: identity'),
    fc.constantFrom('no colon here', ' folded: continuation', ': empty name', 'x-a:\u0001', 'host: localhost', 'host: localhost', 'expect: 100-continue', 'connection: upgrade', 'upgrade: websocket', 'range: bytes=0-1'),
    fc.integer({ min: 1, max: 3 }).map((n) => `x-big: ${'b'.repeat(n * 9000)}`),
    fc.string({ unit: 'binary-ascii', maxLength: 20 }),
  ),
  { maxLength: 5 },
);

export const rawSpecArb: fc.Arbitrary<RawSpec> = fc.record({
  method: fc.constantFrom('GET', 'GET', 'HEAD', 'POST', 'get', 'G\u00e9T', 'PRI', 'CONNECT', ''),
  target: targets,
  version: fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1x', 'HTTP/9.9', ''),
  headers: headerLines,
  body: fc.constantFrom('', '', '{}', '5\r\nhello\r\n0\r\n\r\n', 'zz\r\nxx\r\n', '0\r\n\r\nGET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n'),
});

export function rawBytes(spec: RawSpec): string {
  return `${spec.method} ${spec.target} ${spec.version}\r\n${spec.headers.map((h) => h + '\r\n').join('')}\r\n${spec.body}`;
}

/** Everything the server sent until it closed the connection or was quiet for `quietMs`. */
export function exchange(url: string, bytes: string, quietMs = 1500, deadlineMs = 10_000): Promise<{ text: string; closed: boolean }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    let quiet: NodeJS.Timeout | undefined;
    const done = (closed: boolean) => {
      clearTimeout(quiet);
      clearTimeout(deadline);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    };
    const deadline = setTimeout(() => done(false), deadlineMs);
    const rearm = () => {
      clearTimeout(quiet);
      quiet = setTimeout(() => done(false), quietMs);
    };
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      rearm();
    });
    socket.on('error', () => {});
    socket.on('close', () => done(true));
    socket.write(bytes, 'latin1', rearm);
  });
}

/** Every answer in a raw exchange must be a well-formed status line; none a 500. */
export function checkRawExchange(text: string): string | undefined {
  const statuses = [...text.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
  if (text.length > 0 && !text.startsWith('HTTP/1.')) return `answer does not start with a status line: ${JSON.stringify(text.slice(0, 80))}`;
  const bad = statuses.find((s) => s >= 500 && s !== 501 && s !== 505);
  if (bad !== undefined) return `answered ${bad}: ${JSON.stringify(text.slice(0, 300))}`;
  for (const part of text.split(/(?=HTTP\/1\.[01] \d{3} )/)) {
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(part)?.[1]);
    if (status < 400 || status === 408 || /content-length: 0\r\n/i.test(part)) continue;
    const body = part.slice(part.indexOf('\r\n\r\n') + 4);
    if (body !== '' && !/"code":"[A-Z_]+"|<Code>[A-Za-z]+<\/Code>/.test(body)) return `error ${status} without a stable code: ${JSON.stringify(part.slice(0, 300))}`;
  }
  return undefined;
}
