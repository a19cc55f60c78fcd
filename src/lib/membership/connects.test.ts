import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { ConnectionPool } from '../leanhttp/index.js';
import { EndpointConnects } from './connects.js';

/**
 * A listener that never accepts (its process blocked after listen, with a backlog of 0): once its
 * accept queue holds one connection, the kernel drops further SYNs and their connects stay pending
 * (SYN_SENT), as to an etcd whose packets vanish.
 */
async function deafListener(): Promise<{ port: number; stop(): void }> {
  const child = spawn(process.execPath, [
    '-e',
    `require('node:net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 0 }, function () {
       process.stdout.write(this.address().port + '\\n');
       Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
     })`,
  ]);
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  return { port: Number(line.toString().trim()), stop: () => child.kill('SIGKILL') };
}

function connecting(port: number): Socket {
  const socket = connect({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  return socket;
}

const closed = (socket: Socket) => (socket.destroyed ? Promise.resolve() : once(socket, 'close').then(() => undefined));

test('a new connect to an etcd endpoint ends the one still pending there, and closing the client ends the last', { timeout: 20_000 }, async () => {
  const deaf = await deafListener();
  const connects = new EndpointConnects([`http://127.0.0.1:${deaf.port}`]);
  const filler = connecting(deaf.port);
  try {
    await once(filler, 'connect'); // the accept queue's one place: from now on SYNs are dropped
    const first = connecting(deaf.port);
    await once(first, 'connectionAttempt');
    assert.equal(first.connecting, true);
    const second = connecting(deaf.port);
    await closed(first); // ended by the newer connect, not by the kernel's SYN retries (127 s)
    assert.equal(second.connecting, true);
    connects.close();
    await closed(second);
    assert.equal(filler.destroyed, false, 'a connection that was made is left alone');
  } finally {
    connects.close();
    filler.destroy();
    deaf.stop();
  }
});

test('connects elsewhere are left alone', async () => {
  const deaf = await deafListener();
  const connects = new EndpointConnects(['http://127.0.0.1:1']); // another endpoint
  const filler = connecting(deaf.port);
  const pending: Socket[] = [];
  try {
    await once(filler, 'connect');
    for (let i = 0; i < 2; i++) {
      pending.push(connecting(deaf.port));
      await once(pending[i]!, 'connectionAttempt');
    }
    connects.close();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      pending.map((s) => s.connecting),
      [true, true],
    );
  } finally {
    connects.close();
    for (const s of [filler, ...pending]) s.destroy();
    deaf.stop();
  }
});

/** Sockets of this process in SYN_SENT to `port` on 127.0.0.1 (/proc/self/net/tcp: state 02). */
function synSentTo(port: number): number {
  const remote = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/self/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .filter((line) => {
      const cols = line.trim().split(/\s+/);
      return cols[2] === remote && cols[3] === '02';
    }).length;
}

/**
 * Connects to the deaf listener until one stays pending: the accept queue is then full (its size
 * is the kernel's to choose). The pending one is ended; the others are returned, to be destroyed.
 */
async function fillAcceptQueue(port: number): Promise<Socket[]> {
  const made: Socket[] = [];
  for (;;) {
    const socket = connecting(port);
    const connected = once(socket, 'connect').then(() => true);
    while (!socket.destroyed && synSentTo(port) === 0 && !(await Promise.race([connected, new Promise<false>((r) => setTimeout(() => r(false), 10))])));
    if (synSentTo(port) > 0) {
      socket.destroy();
      await closed(socket);
      while (synSentTo(port) > 0) await new Promise((r) => setTimeout(r, 10));
      return made;
    }
    made.push(socket);
  }
}

test("the JSON client's connects (lean HTTP, with a deadline of their own) are never ended by a newer connect", { timeout: 20_000 }, async () => {
  const deaf = await deafListener();
  const connects = new EndpointConnects([`http://127.0.0.1:${deaf.port}`]);
  const pool = new ConnectionPool(`http://127.0.0.1:${deaf.port}`, { connections: 1, timeouts: { connectMs: 15_000, firstByteMs: 15_000, idleMs: 15_000 } });
  const abort = new AbortController();
  let fillers: Socket[] = [];
  let newer: Socket | undefined;
  try {
    fillers = await fillAcceptQueue(deaf.port);
    const request = pool.get('/', {}, abort.signal).catch((err: Error) => err);
    while (synSentTo(deaf.port) < 1) await new Promise((r) => setTimeout(r, 10)); // its connect is pending
    newer = connecting(deaf.port);
    await once(newer, 'connectionAttempt');
    // Before: the newer connect ended the lean one (its request then waited out connectMs), and
    // this wait for both to be pending never ended (the test's timeout).
    while (synSentTo(deaf.port) < 2) await new Promise((r) => setTimeout(r, 10));
    assert.equal(newer.connecting, true);
    abort.abort();
    pool.close();
    await request;
  } finally {
    connects.close();
    pool.close();
    newer?.destroy();
    for (const filler of fillers) filler.destroy();
    deaf.stop();
  }
});
