#!/usr/bin/env node
// The lab's origin: a plain static-file HTTP server (no dependencies) that counts the body bytes
// it sends, so a benchmark can tell how many times the source was read. In the lab, tc caps its
// egress (netlab.sh --origin-rate); it does no pacing of its own.
//   node origin.mjs --dir DIR [--host 0.0.0.0] [--port 8080] [--quiet] [--rate 0] [--bucket NAME]
// With --bucket, DIR is also an S3 bucket (path-style, signatures not checked): GET/HEAD
// /NAME/KEY (If-Match honoured), ListObjectsV2 at GET /NAME?list-type=2 (s3list.mjs), and plain
// HTTP readers use the same /NAME/KEY URLs; nothing outside /NAME/ is served.
// GET/HEAD with one byte range (206/416), ETag with If-None-Match and If-Range, Last-Modified.
// GET /__stats → {"bytes":N,"requests":N}. The ETag is "SIZE-MTIMEMS" in decimal: the version
// fanout gives the same file in a directory source, so a release published from the directory
// (bench/lab-dc.mjs) names versions a cluster reading this server recognises.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';
import { listObjects } from './s3list.mjs';

const { values: opt } = parseArgs({
  options: {
    dir: { type: 'string', default: '.' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '8080' },
    rate: { type: 'string', default: '0' },
    quiet: { type: 'boolean', default: false },
    bucket: { type: 'string' },
  },
});
if (opt.rate !== '0') throw new Error('origin.mjs does not pace: cap the origin host with netlab.sh --origin-rate');
const root = resolve(opt.dir);
const stats = { bytes: 0, requests: 0 };

function answer(res, status, headers = {}, body = '') {
  res.writeHead(status, { 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

/** "bytes=A-B" | "bytes=A-" | "bytes=-N" → [start, end) or null (unsatisfiable); undefined: not one range. */
function range(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header ?? '');
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') return Number(m[2]) === 0 || size === 0 ? null : [Math.max(0, size - Number(m[2])), size];
  const start = Number(m[1]);
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= size) return null;
  return [start, m[2] === '' ? size : Math.min(size, Number(m[2]) + 1)];
}

const server = createServer(async (req, res) => {
  stats.requests++;
  const url = new URL(req.url ?? '/', 'http://origin');
  let path = decodeURIComponent(url.pathname);
  if (path === '/__stats') return answer(res, 200, { 'content-type': 'application/json' }, JSON.stringify(stats));
  if (req.method !== 'GET' && req.method !== 'HEAD') return answer(res, 405);
  if (opt.bucket !== undefined) {
    if ((path === `/${opt.bucket}` || path === `/${opt.bucket}/`) && url.searchParams.get('list-type') === '2') {
      return answer(res, 200, { 'content-type': 'application/xml' }, await listObjects(root, opt.bucket, url.searchParams));
    }
    if (!path.startsWith(`/${opt.bucket}/`)) return answer(res, 404, { 'content-type': 'application/xml' }, '<Error><Code>NoSuchKey</Code></Error>');
    path = path.slice(opt.bucket.length + 1);
  }
  const file = resolve(root, '.' + path);
  if (file !== root && !file.startsWith(root + sep)) return answer(res, 404);
  let info;
  try {
    info = await stat(file);
  } catch {
    return answer(res, 404);
  }
  if (!info.isFile()) return answer(res, 404);
  const etag = `"${info.size}-${Math.floor(info.mtimeMs)}"`;
  const headers = { etag, 'last-modified': info.mtime.toUTCString(), 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
  if (req.headers['if-none-match'] === etag) return answer(res, 304, headers);
  if (req.headers['if-match'] !== undefined && req.headers['if-match'] !== etag) return answer(res, 412, headers);
  const ifRange = req.headers['if-range'];
  let span = ifRange === undefined || ifRange === etag ? range(req.headers.range, info.size) : undefined;
  if (span === null) return answer(res, 416, { 'content-range': `bytes */${info.size}` });
  const [start, end] = span ?? [0, info.size];
  if (span) headers['content-range'] = `bytes ${start}-${end - 1}/${info.size}`;
  res.writeHead(span ? 206 : 200, { ...headers, 'content-length': end - start });
  if (req.method === 'HEAD' || end === start) return res.end();
  const body = createReadStream(file, { start, end: end - 1, highWaterMark: 1 << 20 });
  body.on('data', (chunk) => (stats.bytes += chunk.length));
  body.on('error', () => res.destroy());
  res.on('close', () => body.destroy());
  body.pipe(res);
})
  // As web servers and object stores keep idle connections (nginx 75 s): Node's 5 s default, on a
  // loaded machine, closes connections that clients are just reusing.
  .setTimeout(0)
  .listen(Number(opt.port), opt.host, function () {
    this.keepAliveTimeout = 75_000;
    if (!opt.quiet) console.error(`origin: ${root} on http://${opt.host}:${opt.port}`);
  });
