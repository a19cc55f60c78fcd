import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A misbehaving S3 server for tests: a real node:http server on a free loopback port that speaks
 * just enough S3 (path style, signatures ignored) for the listing and error answers that the
 * real S3 server (s3.ts) never gives: listings that never end, and error bodies without end.
 *
 *   const s3 = await MisbehavingS3.start();
 *   s3.behave({ listing: 'loop' });                // ListObjectsV2 hands back the same token for ever
 *   s3.behave({ errorBytes: 64 * 1024 * 1024 });   // every request: HTTP 500, a 64 MiB error body
 *   s3.counters.lists / .requests / .bodyBytes
 *
 * Without a behaviour, ListObjectsV2 lists `pages` pages of one key each (`k0.bin`, `k1.bin`, …
 * under the asked prefix), each with its own token, and every other request is 404 NoSuchKey.
 */
export interface S3Behaviour {
  /**
   * 'loop': every page is truncated with the same NextContinuationToken; 'no-token': truncated, no
   * token; 'ignores-prefix': one page with keys outside the asked prefix too (`k0.bin`, `{prefix without its slash}k.bin`,
   * a common prefix `other/`) besides `{prefix}in.bin`; 'endless': every page truncated with a
   * fresh token (`page-N+1`), one new key each; 'endless-empty': the same with no keys at all;
   * 'bad-sizes': one page whose keys `none.bin`, `negative.bin`, `huge.bin`, `fraction.bin` have no
   * Size, -5, 2^53+1 and 1.5, beside `good.bin` of 5 bytes (none.bin has no ETag either);
   * 'ignores-delimiter': every key under the prefix, over two pages, no common prefixes (`a.bin`,
   * `sub/b.bin`, `sub/deeper/c.bin`, `sub/`; then `other/d.bin`, `z.bin`); 'elsewhere': whatever the
   * prefix, the keys `k0.bin` and `other/x.bin` (a server that ignores Prefix, nothing under it).
   */
  listing?: 'loop' | 'no-token' | 'ignores-prefix' | 'endless' | 'endless-empty' | 'bad-sizes' | 'ignores-delimiter' | 'elsewhere';
  /** Characters of padding in each key of an 'endless' listing (default none). */
  keyPadding?: number;
  /** Pages of a well-behaved listing (default 3). */
  pages?: number;
  /** HeadObject answers 200 with this Content-Length (and an ETag), whatever the key; 'none': with no Content-Length at all. */
  headLength?: string;
  /** Every request is answered 301 PermanentRedirect naming this region (x-amz-bucket-region), as AWS answers a bucket asked in another region. */
  movedTo?: string;
  /** Every request is answered with this status and an nginx-style HTML error page (a proxy in front of the server); HEAD with the headers only. */
  htmlError?: number;
  /** Every request is answered with this status and no body at all (as S3 answers HEAD). */
  bareError?: number;
  /** Every request is answered HTTP 500 with an XML error body this long, written as the client reads it. */
  errorBytes?: number;
}

export interface S3Counters {
  requests: number;
  lists: number;
  /** Error-body bytes written to sockets. */
  bodyBytes: number;
}

export class MisbehavingS3 {
  readonly counters: S3Counters = { requests: 0, lists: 0, bodyBytes: 0 };
  private behaviour: S3Behaviour = {};
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    /** http://127.0.0.1:PORT: the endpoint of an S3 client (path style). */
    readonly url: string,
  ) {}

  static async start(): Promise<MisbehavingS3> {
    let s3: MisbehavingS3 | undefined;
    const server = createServer((req, res) => s3!.handle(req.method ?? 'GET', req.url ?? '/', res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    s3 = new MisbehavingS3(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    server.on('connection', (socket) => {
      s3!.sockets.add(socket);
      socket.once('close', () => s3!.sockets.delete(socket));
    });
    return s3;
  }

  behave(behaviour: S3Behaviour): void {
    this.behaviour = { ...behaviour };
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(method: string, rawUrl: string, res: ServerResponse): void {
    this.counters.requests++;
    res.on('error', () => {});
    const url = new URL(rawUrl, 'http://x');
    if (this.behaviour.errorBytes !== undefined) return this.hugeError(res, this.behaviour.errorBytes);
    if (this.behaviour.htmlError !== undefined) {
      res.writeHead(this.behaviour.htmlError, { 'content-type': 'text/html' });
      const title = `${this.behaviour.htmlError} Bad Gateway`;
      return void res.end(method === 'HEAD' ? undefined : `<html><head><title>${title}</title></head><body><center><h1>${title}</h1></center><hr><center>nginx</center></body></html>`);
    }
    if (this.behaviour.bareError !== undefined) return void res.writeHead(this.behaviour.bareError, { 'content-length': '0' }).end();
    const region = this.behaviour.movedTo;
    if (region !== undefined) {
      res.writeHead(301, { 'content-type': 'application/xml', 'x-amz-bucket-region': region });
      // A HEAD's answer has no body: there the header is all the client gets.
      return void res.end(
        `<?xml version="1.0" encoding="UTF-8"?><Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><Endpoint>b.s3.${region}.amazonaws.com</Endpoint><Bucket>b</Bucket></Error>`,
      );
    }
    if (url.searchParams.get('list-type') === '2') return this.list(url, res);
    if (method === 'HEAD' && this.behaviour.headLength !== undefined) {
      const length = this.behaviour.headLength === 'none' ? {} : { 'content-length': this.behaviour.headLength };
      return void res.writeHead(200, { ...length, etag: '"h"', 'last-modified': new Date(0).toUTCString() }).end();
    }
    res.writeHead(404, { 'content-type': 'application/xml' });
    res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>');
  }

  private list(url: URL, res: ServerResponse): void {
    this.counters.lists++;
    const prefix = url.searchParams.get('prefix') ?? '';
    const page = Number(url.searchParams.get('continuation-token')?.replace('page-', '') ?? 0);
    const pages = this.behaviour.pages ?? 3;
    let next = '';
    const endless = this.behaviour.listing === 'endless' || this.behaviour.listing === 'endless-empty';
    if (endless) next = `<IsTruncated>true</IsTruncated><NextContinuationToken>page-${page + 1}</NextContinuationToken>`;
    else if (this.behaviour.listing === 'loop') next = '<IsTruncated>true</IsTruncated><NextContinuationToken>page-1</NextContinuationToken>';
    else if (this.behaviour.listing === 'no-token') next = '<IsTruncated>true</IsTruncated>';
    else if (page + 1 < pages) next = `<IsTruncated>true</IsTruncated><NextContinuationToken>page-${page + 1}</NextContinuationToken>`;
    else next = '<IsTruncated>false</IsTruncated>';
    const ignoresPrefix = this.behaviour.listing === 'ignores-prefix';
    if (ignoresPrefix) next = '<IsTruncated>false</IsTruncated>';
    if (this.behaviour.listing === 'bad-sizes') return this.badSizes(prefix, res);
    if (this.behaviour.listing === 'ignores-delimiter') return this.allKeys(prefix, page, res);
    if (this.behaviour.listing === 'elsewhere') return this.allKeys('', 1, res, ['k0.bin', 'other/x.bin']);
    const keys = this.behaviour.listing === 'endless-empty' ? [] : ignoresPrefix ? [`k${page}.bin`, `${prefix.replace(/\/$/, '')}k.bin`, `${prefix}in.bin`] : [`${prefix}k${page}${'x'.repeat(this.behaviour.keyPadding ?? 0)}.bin`];
    const prefixes = ignoresPrefix ? ['other/'] : [];
    res.writeHead(200, { 'content-type': 'application/xml' });
    res.end(
      `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><Prefix>${prefix}</Prefix><KeyCount>${keys.length}</KeyCount>${next}` +
        keys.map((key) => `<Contents><Key>${key}</Key><Size>5</Size><ETag>"e${page}"</ETag><LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>`).join('') +
        prefixes.map((p) => `<CommonPrefixes><Prefix>${p}</Prefix></CommonPrefixes>`).join('') +
        `</ListBucketResult>`,
    );
  }

  private allKeys(prefix: string, page: number, res: ServerResponse, only?: string[]): void {
    const keys = only ?? (page === 0 ? ['a.bin', 'sub/b.bin', 'sub/deeper/c.bin', 'sub/'] : ['other/d.bin', 'z.bin']);
    const next = page === 0 ? '<IsTruncated>true</IsTruncated><NextContinuationToken>page-1</NextContinuationToken>' : '<IsTruncated>false</IsTruncated>';
    res.writeHead(200, { 'content-type': 'application/xml' });
    res.end(
      `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><Prefix>${prefix}</Prefix><KeyCount>${keys.length}</KeyCount>${next}` +
        keys.map((key) => `<Contents><Key>${prefix}${key}</Key><Size>5</Size><ETag>"e"</ETag><LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>`).join('') +
        `</ListBucketResult>`,
    );
  }

  private badSizes(prefix: string, res: ServerResponse): void {
    const entry = (name: string, size: string | undefined, etag = true) =>
      `<Contents><Key>${prefix}${name}</Key>${size === undefined ? '' : `<Size>${size}</Size>`}${etag ? `<ETag>"${name}"</ETag>` : ''}<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>`;
    res.writeHead(200, { 'content-type': 'application/xml' });
    res.end(
      `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><Prefix>${prefix}</Prefix><KeyCount>5</KeyCount><IsTruncated>false</IsTruncated>` +
        entry('fraction.bin', '1.5') + entry('good.bin', '5') + entry('huge.bin', '9007199254740993') + entry('negative.bin', '-5') + entry('none.bin', undefined, false) +
        `</ListBucketResult>`,
    );
  }

  /** An error document whose message goes on for `bytes`, written under the client's backpressure. */
  private hugeError(res: ServerResponse, bytes: number): void {
    res.writeHead(500, { 'content-type': 'application/xml', 'content-length': String(bytes) });
    const head = Buffer.from('<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>');
    const chunk = Buffer.alloc(64 * 1024, 'x');
    let left = bytes;
    const write = (piece: Buffer): boolean => {
      left -= piece.length;
      this.counters.bodyBytes += piece.length;
      return res.write(piece);
    };
    const pump = (): void => {
      while (left > 0 && !res.destroyed) {
        if (!write(left <= chunk.length ? chunk.subarray(0, left) : chunk)) return void res.once('drain', pump);
      }
      if (!res.destroyed) res.end();
    };
    write(head);
    pump();
  }
}
