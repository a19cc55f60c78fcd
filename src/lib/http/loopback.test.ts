import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { isLoopbackAddress, isLoopbackHost, listensOnLoopbackOnly } from './loopback.js';

test('loopback addresses: 127.0.0.0/8 and ::1, in any spelling; nothing else', () => {
  for (const a of ['127.0.0.1', '127.255.3.4', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::FFFF:127.9.9.9']) assert.equal(isLoopbackAddress(a), true, a);
  for (const a of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '::2', '::ffff:10.0.0.1', 'fe80::1%lo', 'localhost', '']) assert.equal(isLoopbackAddress(a), false, a);
});

test('loopback Hosts: localhost, *.localhost, 127.x.x.x, [::1], with any port; other names and forms are not', () => {
  for (const h of ['localhost', 'localhost:7450', 'LocalHost:1', 'app.localhost', 'data.localhost:7451', '127.0.0.1', '127.0.0.1:7450', '127.1.2.3:80', '[::1]', '[::1]:7450', '[::ffff:127.0.0.1]:1', '127.0.0.1:']) {
    assert.equal(isLoopbackHost(h), true, h);
  }
  for (const h of ['attacker.example', 'attacker.example:7450', 'localhost.attacker.example', 'localhostx', 'xlocalhost', '127.0.0.1.nip.io', '127.1', '0.0.0.0', '[::2]:1', '::1', '[::1', 'localhost:port', 'localhost:1:2', '', ' ']) {
    assert.equal(isLoopbackHost(h), false, h);
  }
});

test('a server listening on 127.0.0.1 listens on loopback only; one on 0.0.0.0 does not', async () => {
  for (const [host, expected] of [['127.0.0.1', true], ['0.0.0.0', false]] as const) {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    try {
      assert.equal(listensOnLoopbackOnly(server), expected, host);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }
});
