import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** Sends `request` on a fresh connection; resolves with the socket once the first bytes of the answer arrive. */
function firstChunk(endpoint: string, request: string): Promise<{ socket: Socket; chunk: Buffer }> {
  const { hostname, port } = new URL(endpoint);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(request));
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      resolve({ socket, chunk });
    });
    socket.once('error', reject);
  });
}

/** Sends `request` on a fresh connection and reads until the server closes it. */
function untilClosed(endpoint: string, request: string): Promise<string> {
  const { hostname, port } = new URL(endpoint);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(request));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => {
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.once('error', reject);
  });
}

/**
 * The S3 gateway facing clients that misbehave: they hang up mid-answer, or send what no S3
 * client sends. Anonymous access, so raw requests need no signature.
 */
describe('the S3 gateway and hostile clients', () => {
  let source: string;
  let worker: WorkerProcess;
  let endpoint: string;
  const workerLog = () => readFile(join(worker.dir, 'worker.log'), 'utf8');

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-gwh-src-'));
    await writeFile(join(source, 'big.bin'), randomBytes(8 * MiB));
    // Two links back to their own directory: followed, they would double the keys at each level.
    await mkdir(join(source, 'loopdir'));
    await writeFile(join(source, 'loopdir/file.txt'), 'in the loop\n');
    await symlink('../loopdir', join(source, 'loopdir/self'));
    await symlink('../loopdir', join(source, 'loopdir/again'));
    // A loop through two sibling directories: a/x/y/x/y/… down to the kernel's 40 links if followed.
    await mkdir(join(source, 'sib/a'), { recursive: true });
    await mkdir(join(source, 'sib/b'));
    await writeFile(join(source, 'sib/a/fa.txt'), 'a\n');
    await writeFile(join(source, 'sib/b/fb.txt'), 'b\n');
    await symlink('../b', join(source, 'sib/a/x'));
    await symlink('../a', join(source, 'sib/b/y'));
    const port = await freePort();
    endpoint = `http://127.0.0.1:${port}`;
    worker = await WorkerProcess.start({ id: 'gwh', mounts: { data: source }, pageSize: '1MiB', gateway: { listen: `127.0.0.1:${port}`, anonymous: true } });
  });

  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
  });

  test('clients that hang up mid-GetObject are not logged as server errors', async () => {
    // Cached first, so the answers go out by the kernel-send path, whose failure is ABORTED.
    assert.equal((await (await fetch(`${endpoint}/data/big.bin`)).arrayBuffer()).byteLength, 8 * MiB);
    const request = `GET /data/big.bin HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`;
    for (let round = 0; round < 40; round++) {
      const { socket, chunk } = await firstChunk(endpoint, request);
      assert.match(chunk.toString('latin1'), /^HTTP\/1\.1 200 /);
      // Half close politely, half reset: both are a client gone, not a failure of the server.
      if (round % 2) socket.resetAndDestroy();
      else socket.destroy();
    }
    const res = await fetch(`${endpoint}/data/big.bin`, { headers: { range: 'bytes=0-9' } });
    assert.equal(res.status, 206);
    await res.arrayBuffer();
    await new Promise((r) => setTimeout(r, 500));
    const log = await workerLog();
    assert.doesNotMatch(log, /InternalError|S3 request failed/, log.slice(0, 2000));
  });

  test('a bucket whose directories link back to themselves or to each other lists to an end, each key once (as find -L)', async () => {
    const keys: string[] = [];
    let token: string | undefined;
    for (let page = 0; page < 50; page++) {
      const res = await fetch(`${endpoint}/data?list-type=2${token ? `&continuation-token=${encodeURIComponent(token)}` : ''}`);
      const xml = await res.text();
      assert.equal(res.status, 200, xml);
      keys.push(...[...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]!));
      token = /<NextContinuationToken>([^<]*)</.exec(xml)?.[1];
      if (!token) break;
    }
    assert.equal(token, undefined, `still listing after 50 pages, ${keys.length} keys`);
    assert.deepEqual(keys, ['big.bin', 'loopdir/file.txt', 'sib/a/fa.txt', 'sib/a/x/fb.txt', 'sib/b/fb.txt', 'sib/b/y/fa.txt']);
    // The listed names read through the links; a name round a loop is no key, as it is no listed one.
    assert.equal(await (await fetch(`${endpoint}/data/sib/a/x/fb.txt`)).text(), 'b\n');
    for (const key of ['loopdir/self/file.txt', 'sib/a/x/y/x/fb.txt']) {
      const res = await fetch(`${endpoint}/data/${key}`);
      assert.equal(res.status, 404, key);
      assert.match(await res.text(), /<Code>NoSuchKey<\/Code>/);
      assert.equal((await fetch(`${endpoint}/data/${key}`, { method: 'HEAD' })).status, 404, key);
    }
    // A prefix round the loop lists nothing (no marker for it either).
    for (const prefix of ['sib/a/x/y/', 'sib/a/x/y/x/y/', 'loopdir/self/']) {
      const xml = await (await fetch(`${endpoint}/data?list-type=2&prefix=${encodeURIComponent(prefix)}`)).text();
      assert.match(xml, /<KeyCount>0<\/KeyCount>/, `${prefix}: ${xml}`);
    }
  });

  test('an Expect other than 100-continue: 417 with an S3 error and a request id', async () => {
    const { status, headers, body } = await new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = httpRequest(`${endpoint}/data/big.bin`, { headers: { expect: 'something-else' } }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 417, body);
    assert.equal(headers['content-type'], 'application/xml');
    assert.match(body, /<Code>ExpectationFailed<\/Code>/);
    assert.ok(headers['x-amz-request-id'], 'a request id');
    assert.match(body, new RegExp(`<RequestId>${headers['x-amz-request-id']}</RequestId>`));
  });

  test('a GET with a body it never finishes: answered, then the connection closes (the body is not read on)', async () => {
    // Before: the answer kept the connection alive and node read the announced GiB for as long as it came.
    const answer = await untilClosed(endpoint, 'GET /data/loopdir/file.txt HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1073741824\r\n\r\nsome bytes');
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    assert.ok(answer.endsWith('in the loop\n'), answer);
  });

  test('anonymous writes are refused as S3 refuses them (403 AccessDenied), not told they are not implemented; anonymous reads go on', async () => {
    // Before: 501 NotImplemented, which told an anonymous caller what the gateway would do with credentials.
    const writes: [string, string, string | undefined][] = [
      ['PUT', '/data/new.txt', 'x'],
      ['PUT', '/data/new.txt?partNumber=1&uploadId=u', 'x'],
      ['DELETE', '/data/loopdir/file.txt', undefined],
      ['POST', '/data?delete', '<Delete><Object><Key>loopdir/file.txt</Key></Object></Delete>'],
      ['POST', '/data/new.txt?uploads', undefined],
      ['PUT', '/newbucket', undefined],
      ['DELETE', '/data', undefined],
    ];
    for (const [method, path, body] of writes) {
      const res = await fetch(`${endpoint}${path}`, { method, body });
      const text = await res.text();
      assert.equal(res.status, 403, `${method} ${path}: ${text}`);
      assert.match(text, /<Code>AccessDenied<\/Code>/, `${method} ${path}`);
    }
    const read = await fetch(`${endpoint}/data/loopdir/file.txt`);
    assert.equal(read.status, 200);
    assert.equal(await read.text(), 'in the loop\n');
  });

  test('CONNECT: 405 MethodNotAllowed as S3 XML, then the connection closes; the gateway goes on', async () => {
    const answer = await untilClosed(endpoint, 'CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 405 /);
    assert.match(answer, /\r\nx-amz-request-id: \w+\r\n/);
    assert.match(answer, /<Code>MethodNotAllowed<\/Code>/);
    assert.match(answer, /\r\nconnection: close\r\n/);
    // A client that resets right after its CONNECT does not take the worker down.
    const { socket } = await firstChunk(endpoint, 'CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n');
    socket.resetAndDestroy();
    assert.equal((await fetch(`${endpoint}/data/loopdir/file.txt`)).status, 200);
  });
});
