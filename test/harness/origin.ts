import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { mkdir } from 'node:fs/promises';

/**
 * A misbehaving HTTP origin for tests: a real node:http server on a free loopback port that
 * serves the files of a directory it owns, and can be told at runtime to misbehave the way real
 * web servers, CDNs and `python3 -m http.server` do.
 *
 *   const origin = await Origin.start();
 *   await origin.put('f.bin', bytes);              // served as GET/HEAD {origin.url}/f.bin
 *   origin.behave({ etag: 'none' });               // every path from now on
 *   origin.behave({ truncateAfter: 1000 }, 'f.bin'); // one path (overrides the global behaviour)
 *   origin.normal();                               // back to a well-behaved server
 *   origin.counters.requests / .bytes / .byPath.get('f.bin')
 *   await origin.close();                          // also cuts every hung response
 *
 * A normal origin sends a strong ETag (a hash of the content), Last-Modified (the file's mtime,
 * whole seconds as HTTP has it), Content-Length, honours Range (206 + Content-Range, 416 past the
 * end), If-Match (412) and If-Range (full 200 when it does not match). Each request snapshots
 * the bytes of its range when it starts, like a server holding an open fd: a file replaced
 * mid-response keeps sending the old bytes; the next request sees the new ones.
 */
export interface OriginBehaviour {
  /** 'strong' (default): ETag "sha256-prefix"; 'weak': W/"..."; 'none': no ETag header. */
  etag?: 'strong' | 'weak' | 'none';
  /** Answers every GET with 200 and the whole file, whatever Range says. */
  ignoresRange?: boolean;
  /** Serves the bytes even when If-Match names another ETag (no 412). */
  ignoresIfMatch?: boolean;
  /** Answers every request with this status (e.g. 503) and a short text body. */
  status?: number;
  /** Answers a ranged GET whose range starts at or past `offset` with `status` (a file whose tail the origin cannot read). */
  failFrom?: { offset: number; status: number };
  /**
   * Gzips every answer whose request allows it (no Accept-Encoding, which RFC 9110 12.5.3 reads
   * as "any coding", or one naming gzip), as a compressing proxy or CDN may: ranges and
   * Content-Length are then of the gzipped bytes. 'ignoring-identity': every GET answer is gzipped,
   * even one that asks for `Accept-Encoding: identity`, while HEAD describes the file as stored (a
   * proxy that compresses bodies against the request).
   */
  compresses?: boolean | 'ignoring-identity';
  /** The file is stored in this coding (a .tar.gz served with `Content-Encoding: gzip`): said on HEAD and GET alike, bytes as stored. */
  storedCoding?: string;
  /**
   * Answers every request for the path with `status` (default 301) and `Location: /{to}` (or `to`
   * itself when it has a scheme), with `Cache-Control: {cacheControl}` when given.
   */
  redirect?: { to: string; status?: number; cacheControl?: string };
  /**
   * Sends no Content-Length and ignores Range: HEAD gives none, GET the whole body chunked (a
   * dynamic page, or nginx gzipping an answer it cannot know the length of).
   */
  noLength?: boolean;
  /** Answers HEAD with `Content-Length: 0` whatever the file holds (a handler that skips the body for HEAD, under Go's net/http). */
  headSaysEmpty?: boolean;
  /** The unit its Content-Range names (default "bytes"; units are case-insensitive, RFC 9110 14.1). */
  rangeUnit?: string;
  /** Answers every ranged GET with 416 and `bytes *\/size`, though the range lies inside the file. */
  refusesRange?: boolean;
  /** Sends the full headers (Content-Length of the whole range), then only N body bytes, then ends the response cleanly (FIN). */
  truncateAfter?: number;
  /** Sends N body bytes, then destroys the socket (RST-like: the client sees a reset). */
  resetAfter?: number;
  /** Sends the body at this many bytes per second. */
  bytesPerSecond?: number;
  /** 'headers': sends the headers of a GET, then nothing; 'nothing': never answers at all. */
  hang?: 'headers' | 'nothing';
  /**
   * Replaces the file after this many body bytes of it were served (counted over all requests
   * from when this behaviour was set): new content of the same size, the mtime kept in the same
   * second, as a `mv` of a new file over the old one within one second does.
   */
  replaceAfter?: { bytes: number; data: Buffer };
}

export interface OriginRequest {
  method: string;
  path: string;
  range?: string;
  ifMatch?: string;
  ifRange?: string;
  acceptEncoding?: string;
  status: number;
}

export interface OriginCounters {
  /** Requests received (any method, any path). */
  requests: number;
  /** Body bytes written to sockets. */
  bytes: number;
  /** Per path (without leading slash): requests and body bytes. */
  byPath: Map<string, { requests: number; bytes: number }>;
  /** Every request, in arrival order (status is the one answered; 0 for a hang before headers). */
  log: OriginRequest[];
}

interface FileMeta {
  etag: string;
  mtime: Date;
  size: number;
}

export class Origin {
  readonly counters: OriginCounters = { requests: 0, bytes: 0, byPath: new Map(), log: [] };
  private global: OriginBehaviour = {};
  private readonly perPath = new Map<string, OriginBehaviour>();
  private readonly meta = new Map<string, FileMeta>();
  /** Bytes of each path served since its replaceAfter was set. */
  private readonly servedSinceReplace = new Map<string, number>();
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();

  private constructor(
    private readonly server: Server,
    /** The directory whose files are served; tests write through put()/replace(). */
    readonly dir: string,
    /** http://127.0.0.1:PORT (no trailing slash); file `a/b.bin` is at `${url}/a/b.bin`. */
    readonly url: string,
  ) {}

  static async start(): Promise<Origin> {
    const dir = await mkdtemp(join(tmpdir(), 'fanout-origin-'));
    let origin: Origin | undefined;
    const server = createServer((req, res) => void origin!.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = new Origin(server, dir, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    server.on('connection', (socket) => {
      origin!.sockets.add(socket);
      socket.once('close', () => origin!.sockets.delete(socket));
    });
    return origin;
  }

  /** Sets behaviour for one path (merged over the global one), or globally without a path. */
  behave(behaviour: OriginBehaviour, path?: string): void {
    if (path === undefined) this.global = { ...behaviour };
    else this.perPath.set(strip(path), { ...behaviour });
    if (behaviour.replaceAfter && path !== undefined) this.servedSinceReplace.set(strip(path), 0);
    if (behaviour.replaceAfter && path === undefined) this.servedSinceReplace.clear();
  }

  /** Back to a well-behaved origin everywhere (counters are kept). */
  normal(): void {
    this.global = {};
    this.perPath.clear();
    this.servedSinceReplace.clear();
  }

  /** Creates or overwrites a file (temp + rename, as a deploy would). */
  async put(path: string, data: Buffer, mtime = new Date(Math.floor(Date.now() / 1000) * 1000)): Promise<void> {
    const file = join(this.dir, strip(path));
    await mkdir(dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await writeFile(tmp, data);
    await utimes(tmp, mtime, mtime);
    await rename(tmp, file);
    this.meta.set(strip(path), { etag: etagOf(data), mtime, size: data.length });
  }

  /**
   * New bytes under the same name with the same size and the same Last-Modified second: what
   * size+mtime versions cannot tell apart. Only the ETag (when sent) changes.
   */
  async replace(path: string, data: Buffer): Promise<void> {
    const old = this.meta.get(strip(path));
    if (!old) throw new Error(`origin: no file ${path} to replace`);
    if (old.size !== data.length) throw new Error(`origin: replace keeps the size (${old.size}), got ${data.length}`);
    await this.put(path, data, old.mtime);
  }

  async remove(path: string): Promise<void> {
    await rm(join(this.dir, strip(path)), { force: true });
    this.meta.delete(strip(path));
  }

  /** The bytes currently served for `path`. */
  content(path: string): Promise<Buffer> {
    return readFile(join(this.dir, strip(path)));
  }

  /** Cuts every connection (and so every hung answer), serving on. */
  cutConnections(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.dir, { recursive: true, force: true });
  }

  private behaviourFor(path: string): OriginBehaviour {
    return { ...this.global, ...this.perPath.get(path) };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = strip(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    const entry: OriginRequest = {
      method: req.method ?? 'GET',
      path,
      range: req.headers.range,
      ifMatch: req.headers['if-match'],
      ifRange: req.headers['if-range'] as string | undefined,
      acceptEncoding: req.headers['accept-encoding'],
      status: 0,
    };
    this.counters.requests++;
    this.counters.log.push(entry);
    const perPath = this.counters.byPath.get(path) ?? { requests: 0, bytes: 0 };
    perPath.requests++;
    this.counters.byPath.set(path, perPath);
    const b = this.behaviourFor(path);
    try {
      if (b.hang === 'nothing') return; // the socket stays open until the client or close() ends it
      if (b.status !== undefined) return this.finish(res, entry, b.status, {}, Buffer.from(`origin says ${b.status}\n`));
      if (b.redirect) {
        const location = /^[a-z][a-z0-9+.-]*:/i.test(b.redirect.to) ? b.redirect.to : `/${b.redirect.to}`;
        const headers: Record<string, string> = { location };
        if (b.redirect.cacheControl !== undefined) headers['cache-control'] = b.redirect.cacheControl;
        return this.finish(res, entry, b.redirect.status ?? 301, headers, Buffer.alloc(0));
      }
      const stored = this.meta.get(path);
      const file = join(this.dir, path);
      const st = await stat(file).catch(() => undefined);
      if (!stored || !st?.isFile()) return this.finish(res, entry, 404, {}, Buffer.from('not found\n'));
      // A compressing proxy's representation: the gzipped file, with an ETag of its own (as Apache's mod_deflate gives).
      const compress = b.compresses === 'ignoring-identity' ? req.method !== 'HEAD' : b.compresses && acceptsGzip(req.headers['accept-encoding']);
      const gzipped = compress ? gzipSync(await readFile(file)) : undefined;
      const meta = gzipped ? { ...stored, etag: stored.etag.replace(/"$/, '-gzip"'), size: gzipped.length } : stored;
      const headers: Record<string, string> = { 'last-modified': meta.mtime.toUTCString(), 'accept-ranges': 'bytes' };
      const etag = b.etag ?? 'strong';
      if (etag === 'strong') headers.etag = meta.etag;
      if (etag === 'weak') headers.etag = `W/${meta.etag}`;
      if (b.ignoresRange) delete headers['accept-ranges'];
      if (gzipped) Object.assign(headers, { 'content-encoding': 'gzip', vary: 'Accept-Encoding' });
      else if (b.storedCoding) headers['content-encoding'] = b.storedCoding;
      const ifMatch = req.headers['if-match'];
      // Strong comparison (RFC 9110, 13.1.1): no ETag, or a weak one, never matches.
      if (ifMatch && !b.ignoresIfMatch && ifMatch !== '*' && (etag !== 'strong' || ifMatch !== meta.etag)) {
        return this.finish(res, entry, 412, headers, Buffer.alloc(0));
      }
      let start = 0;
      let end = meta.size - 1;
      let status = 200;
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      const ifRange = req.headers['if-range'];
      const rangeApplies = ifRange === undefined || ifRange === headers.etag || ifRange === headers['last-modified'];
      if (range && !b.ignoresRange && !b.noLength && rangeApplies) {
        start = Number(range[1]);
        end = range[2] ? Math.min(Number(range[2]), meta.size - 1) : meta.size - 1;
        if (start >= meta.size || b.refusesRange) {
          return this.finish(res, entry, 416, { ...headers, 'content-range': `bytes */${meta.size}` }, Buffer.alloc(0));
        }
        if (b.failFrom && start >= b.failFrom.offset) return this.finish(res, entry, b.failFrom.status, {}, Buffer.from(`origin says ${b.failFrom.status}\n`));
        status = 206;
        headers['content-range'] = `${b.rangeUnit ?? 'bytes'} ${start}-${end}/${meta.size}`;
      }
      const length = Math.max(0, end + 1 - start);
      if (!b.noLength) headers['content-length'] = String(length);
      if (b.headSaysEmpty && req.method === 'HEAD') headers['content-length'] = '0';
      if (req.method === 'HEAD') return this.finish(res, entry, status, headers, Buffer.alloc(0));
      const body = gzipped ? gzipped.subarray(start, start + length) : await readRange(file, start, length);
      entry.status = status;
      res.writeHead(status, headers);
      if (b.hang === 'headers') {
        res.flushHeaders();
        return;
      }
      await this.sendBody(res, path, body, b);
    } catch (err) {
      if (!res.headersSent) this.finish(res, entry, 500, {}, Buffer.from(`origin error: ${(err as Error).message}\n`));
      else res.destroy();
    }
  }

  private finish(res: ServerResponse, entry: OriginRequest, status: number, headers: Record<string, string>, body: Buffer): void {
    entry.status = status;
    res.writeHead(status, { ...headers, ...(status >= 400 || body.length > 0 ? { 'content-length': String(body.length) } : {}) });
    res.end(body);
  }

  /** Writes the body in chunks, applying slow / truncate / reset / replace-mid-read. */
  private async sendBody(res: ServerResponse, path: string, body: Buffer, b: OriginBehaviour): Promise<void> {
    const limit = Math.min(body.length, b.truncateAfter ?? Infinity, b.resetAfter ?? Infinity);
    const chunk = b.bytesPerSecond ? Math.max(1, Math.floor(b.bytesPerSecond / 10)) : 64 * 1024;
    let sent = 0;
    while (sent < limit && !res.destroyed) {
      const piece = body.subarray(sent, Math.min(limit, sent + chunk));
      res.write(piece);
      sent += piece.length;
      this.counted(path, piece.length);
      await this.maybeReplace(path, b);
      if (b.bytesPerSecond) await this.sleep(100);
      // Checked after the awaits above: a 'drain' that already fired would never come again.
      if (res.writableNeedDrain) {
        await new Promise<void>((resolve) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.once('drain', done);
          res.once('close', done);
        });
      }
    }
    if (res.destroyed) return;
    if (b.resetAfter !== undefined && sent < body.length) {
      // Let the bytes already written reach the client, then cut the connection hard.
      await this.sleep(10);
      res.socket?.resetAndDestroy?.() ?? res.destroy();
      return;
    }
    if (sent < body.length) {
      // Fewer bytes than Content-Length, then a clean close: a truncated response.
      res.socket?.end();
      return;
    }
    res.end();
  }

  private counted(path: string, n: number): void {
    this.counters.bytes += n;
    this.counters.byPath.get(path)!.bytes += n;
    if (this.servedSinceReplace.has(path)) this.servedSinceReplace.set(path, this.servedSinceReplace.get(path)! + n);
  }

  private async maybeReplace(path: string, b: OriginBehaviour): Promise<void> {
    const rule = b.replaceAfter;
    if (!rule) return;
    const served = this.servedSinceReplace.get(path) ?? 0;
    if (!this.servedSinceReplace.has(path)) this.servedSinceReplace.set(path, served);
    if (served < rule.bytes) return;
    // Once only: the rule is spent as soon as it fired.
    if (this.perPath.get(path)?.replaceAfter === rule) this.perPath.set(path, { ...this.perPath.get(path), replaceAfter: undefined });
    if (this.global.replaceAfter === rule) this.global = { ...this.global, replaceAfter: undefined };
    this.servedSinceReplace.delete(path);
    await this.replace(path, rule.data);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }
}

/** Whether a request's Accept-Encoding lets the answer be gzipped (none at all means any coding). */
function acceptsGzip(accept: string | undefined): boolean {
  if (accept === undefined) return true;
  return accept.split(',').some((item) => {
    const [coding, ...params] = item.split(';').map((part) => part.trim().toLowerCase());
    const q = params.find((p) => p.startsWith('q='));
    return (coding === 'gzip' || coding === '*') && (q === undefined || Number(q.slice(2)) > 0);
  });
}

function strip(path: string): string {
  return path.replace(/^\/+/, '');
}

function etagOf(data: Buffer): string {
  return `"${createHash('sha256').update(data).digest('hex').slice(0, 20)}"`;
}

async function readRange(file: string, start: number, length: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await handle.read(buf, done, length - done, start + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  } finally {
    await handle.close();
  }
}
