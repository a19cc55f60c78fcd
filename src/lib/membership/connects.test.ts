import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
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
