import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FanoutError } from '../../core/errors.js';
import { MAX_SEND_HEAD, MAX_SEND_SPANS, sendFilesTo, sendFileTo, sendPath, type SendPath } from './index.js';

/** A connected loopback pair: `server` is the side sends go out on. */
async function socketPair(): Promise<{ server: Socket; client: Socket; close: () => void }> {
  const listener = createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<Socket>((resolve) => listener.once('connection', resolve));
  const client = connect((listener.address() as { port: number }).port, '127.0.0.1');
  const server = await accepted;
  listener.close();
  return { server, client, close: () => (server.destroy(), client.destroy()) };
}

function collect(socket: Socket, length: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  return new Promise((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      parts.push(chunk);
      got += chunk.length;
      if (got >= length) resolve(Buffer.concat(parts));
    });
    socket.on('error', reject);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Runs `body` with a connected loopback pair and `file` open; closes all three after. */
async function withPair(file: string, body: (server: Socket, client: Socket, fd: number) => Promise<void>): Promise<void> {
  const { server, client, close } = await socketPair();
  const handle = await open(file, 'r');
  try {
    await body(server, client, handle.fd);
  } finally {
    await handle.close();
    close();
  }
}

describe('sendFileTo', () => {
  let dir: string;
  let file: string;
  const data = randomBytes(24 * 1024 * 1024 + 123);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-sendfile-'));
    file = join(dir, 'page');
    await writeFile(file, data);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('uses the kernel here, where the addon is built, unless told not to', () => {
    assert.equal(sendPath(), process.env.FANOUT_NO_SENDFILE === '1' ? 'js' : 'sendfile');
  });

  const paths: SendPath[] = sendPath() === 'sendfile' ? ['sendfile', 'js'] : ['js'];
  for (const path of paths) {
    describe(`${path} path`, () => {
      it('sends the exact bytes of a span after what Node queued, and the socket stays usable', () =>
        withPair(file, async (server, client, fd) => {
          const offset = 1_000_003;
          const length = 9 * 1024 * 1024 + 7;
          const received = collect(client, 5 + length + 4);
          server.write('head:');
          await sendFileTo(server, fd, offset, length, { idleMs: 10_000, path });
          server.write('tail');
          const got = await received;
          assert.equal(got.subarray(0, 5).toString(), 'head:');
          assert.equal(sha(got.subarray(5, 5 + length)), sha(data.subarray(offset, offset + length)));
          assert.equal(got.subarray(5 + length).toString(), 'tail');
        }));

      it('sends a whole file and a zero-length span', () =>
        withPair(file, async (server, client, fd) => {
          const received = collect(client, data.length);
          await sendFileTo(server, fd, 0, 0, { idleMs: 10_000, path });
          await sendFileTo(server, fd, 0, data.length, { idleMs: 10_000, path });
          assert.equal(sha(await received), sha(data));
        }));

      it('sends a head before the span (after what Node queued), alone, and one too long for the send thread', () =>
        withPair(file, async (server, client, fd) => {
          const offset = 77;
          const length = 5 * 1024 * 1024 + 1;
          const long = Buffer.alloc(MAX_SEND_HEAD + 1, 'h');
          const received = collect(client, 2 + 5 + length + 3 + long.length + 10);
          server.write('q:');
          await sendFileTo(server, fd, offset, length, { idleMs: 10_000, path, head: Buffer.from('head:') });
          await sendFileTo(server, fd, 0, 0, { idleMs: 10_000, path, head: Buffer.from('end') });
          await sendFileTo(server, fd, 5, 10, { idleMs: 10_000, path, head: long });
          const got = await received;
          assert.equal(got.subarray(0, 7).toString(), 'q:head:');
          assert.equal(sha(got.subarray(7, 7 + length)), sha(data.subarray(offset, offset + length)));
          assert.equal(got.subarray(7 + length, 10 + length).toString(), 'end');
          assert.ok(got.subarray(10 + length, 10 + length + long.length).equals(long));
          assert.ok(got.subarray(10 + length + long.length).equals(data.subarray(5, 15)));
        }));

      it('small sends to a client that stops reading: those the socket cannot take wait, and all arrive in order', () =>
        withPair(file, async (server, client, fd) => {
          const span = 64 * 1024;
          const sends = 200;
          client.pause();
          const received = collect(client, sends * (span + 4));
          const sending = (async () => {
            for (let i = 0; i < sends; i++) await sendFileTo(server, fd, i * span, span, { idleMs: 10_000, path, head: Buffer.from(String(i % 10).repeat(4)) });
          })();
          await new Promise((resolve) => setTimeout(resolve, 300));
          client.resume();
          await sending;
          const got = await received;
          for (let i = 0; i < sends; i++) {
            const at = i * (span + 4);
            assert.equal(got.subarray(at, at + 4).toString(), String(i % 10).repeat(4), `head ${i}`);
            assert.ok(got.subarray(at + 4, at + 4 + span).equals(data.subarray(i * span, (i + 1) * span)), `span ${i}`);
          }
        }));

      it('fails with ABORTED, not a crash, when the peer resets mid-send', () =>
        withPair(file, async (server, client, fd) => {
          server.on('error', () => {});
          client.once('data', () => client.resetAndDestroy());
          await assert.rejects(sendFileTo(server, fd, 0, data.length, { idleMs: 10_000, path }), (err: FanoutError) => err.code === 'ABORTED');
        }));

      it('fails with ABORTED when the peer takes nothing for idleMs', () =>
        withPair(file, async (server, client, fd) => {
          client.pause();
          await assert.rejects(sendFileTo(server, fd, 0, data.length, { idleMs: 300, path }), (err: FanoutError) => err.code === 'ABORTED' && /no byte/.test(err.message));
        }));

      it('ends at once with ABORTED when Node closes the socket mid-send (not at the idle deadline)', { timeout: 20_000 }, () =>
        withPair(file, async (server, client, fd) => {
          client.pause(); // the kernel buffers fill and the send waits for room
          server.on('error', () => {});
          const sending = sendFileTo(server, fd, 0, data.length, { idleMs: 120_000, path });
          setTimeout(() => server.destroy(), 200);
          await assert.rejects(sending, (err: FanoutError) => err.code === 'ABORTED');
        }));

      it('sends several spans of several files in a row as one send, after a head, in order', () =>
        withPair(file, async (server, client, fd) => {
          const other = await open(join(dir, 'other'), 'w+');
          try {
            const second = randomBytes(3 * 1024 * 1024 + 5);
            await other.write(second, 0, second.length, 0);
            const spans = [
              { fd, offset: 11, length: 4 * 1024 * 1024 },
              { fd: other.fd, offset: 0, length: second.length },
              { fd, offset: 0, length: 0 },
              { fd, offset: data.length - 1000, length: 1000 },
            ];
            const total = spans.reduce((sum, s) => sum + s.length, 0);
            const received = collect(client, 2 + 5 + total + 4);
            server.write('q:');
            await sendFilesTo(server, spans, { idleMs: 10_000, path, head: Buffer.from('head:') });
            server.write('tail');
            const got = await received;
            const expected = Buffer.concat([Buffer.from('q:head:'), data.subarray(11, 11 + 4 * 1024 * 1024), second, data.subarray(data.length - 1000), Buffer.from('tail')]);
            assert.equal(got.length, expected.length);
            assert.equal(sha(got), sha(expected));
          } finally {
            await other.close();
          }
        }));

      it('spans: a file shorter than its span fails with INTERNAL naming the span; no span or too many is INVALID_ARGUMENT', () =>
        withPair(file, async (server, client, fd) => {
          client.resume();
          const spans = [
            { fd, offset: 0, length: 1000 },
            { fd, offset: data.length - 10, length: 20 },
          ];
          await assert.rejects(sendFilesTo(server, spans, { idleMs: 10_000, path }), (err: FanoutError) => err.code === 'INTERNAL' && (path === 'js' || /span 2 of 2/.test(err.message)));
          await assert.rejects(sendFilesTo(server, [], { idleMs: 10_000, path }), (err: FanoutError) => err.code === 'INVALID_ARGUMENT');
          const many = Array.from({ length: MAX_SEND_SPANS + 1 }, () => ({ fd, offset: 0, length: 1 }));
          await assert.rejects(sendFilesTo(server, many, { idleMs: 10_000, path }), (err: FanoutError) => err.code === 'INVALID_ARGUMENT');
        }));

      it('spans: a client that takes nothing for idleMs fails the send with ABORTED', () =>
        withPair(file, async (server, client, fd) => {
          client.pause();
          const spans = [0, 1, 2].map((i) => ({ fd, offset: i * 8 * 1024 * 1024, length: 8 * 1024 * 1024 }));
          await assert.rejects(sendFilesTo(server, spans, { idleMs: 300, path }), (err: FanoutError) => err.code === 'ABORTED' && /no byte/.test(err.message));
        }));

      it('fails with INTERNAL when the file is shorter than the span', () =>
        withPair(file, async (server, client, fd) => {
          client.resume();
          await assert.rejects(sendFileTo(server, fd, data.length - 10, 20, { idleMs: 10_000, path }), (err: FanoutError) => err.code === 'INTERNAL');
        }));
    });
  }
});
