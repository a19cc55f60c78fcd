import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { EtcdError, EtcdJsonClient, prefixEnd } from './index.js';

const b64 = (text: string) => Buffer.from(text).toString('base64');

/** An in-process stand-in for etcd's gateway: `answer` gets each request's path, JSON body and Authorization header. */
async function fakeGateway(answer: (path: string, body: Record<string, unknown>, token: string | undefined) => [number, object]): Promise<{ url: string; server: Server; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (text += chunk));
    req.on('end', () => {
      requests.push(req.url!);
      const [status, body] = answer(req.url!, JSON.parse(text) as Record<string, unknown>, req.headers.authorization);
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, requests };
}

test('a client needs an endpoint', () => {
  assert.throws(() => new EtcdJsonClient({ endpoints: [] }), /at least one endpoint/);
});

test('prefixEnd: the prefix with its last byte raised, trailing 0xff dropped, every key for an empty prefix', () => {
  assert.equal(Buffer.from(prefixEnd('/a/'), 'base64').toString(), '/a0');
  assert.equal(Buffer.from(prefixEnd('ab'), 'base64').toString(), 'ac');
  assert.deepEqual(Buffer.from(prefixEnd('a\u00ff'), 'base64'), Buffer.from([0x61, 0xc3, 0xc0])); // UTF-8 c3 bf → c3 c0
  assert.deepEqual(Buffer.from(prefixEnd(''), 'base64'), Buffer.from([0]));
});

test('a token etcd calls expired is exchanged again once, and the request sent again with the new one', async () => {
  let tokens = 0;
  const gateway = await fakeGateway((path, body, token) => {
    if (path === '/v3/auth/authenticate') return body.password === 'pw' ? [200, { token: `t${++tokens}` }] : [400, { message: 'etcdserver: authentication failed', code: 3 }];
    if (token !== 't2') return [401, { message: 'etcdserver: invalid auth token', code: 16 }];
    return [200, { kvs: [{ key: b64('/k'), value: b64('v'), create_revision: '3', mod_revision: '4' }] }];
  });
  const client = new EtcdJsonClient({ endpoints: [gateway.url], auth: { username: 'root', password: 'pw' } }, 2000);
  try {
    assert.deepEqual(await client.get('/k'), { key: '/k', value: 'v', createRevision: '3', modRevision: '4' });
    assert.deepEqual(gateway.requests, ['/v3/auth/authenticate', '/v3/kv/range', '/v3/auth/authenticate', '/v3/kv/range']);
  } finally {
    client.close();
  }
  const wrong = new EtcdJsonClient({ endpoints: [gateway.url], auth: { username: 'root', password: 'nope' } }, 2000);
  try {
    await assert.rejects(wrong.get('/k'), (err: EtcdError) => err.grpcCode === 3 && /authentication failed/.test(err.message));
  } finally {
    wrong.close();
    gateway.server.close();
  }
});

test('an endpoint that refuses connections is skipped; an error etcd answers is not retried elsewhere', async () => {
  const refused = createNetServer();
  await new Promise<void>((resolve) => refused.listen(0, '127.0.0.1', resolve));
  const closedPort = (refused.address() as AddressInfo).port;
  await new Promise<void>((resolve) => refused.close(() => resolve()));
  const gateway = await fakeGateway((path) => (path === '/v3/kv/put' ? [400, { message: 'etcdserver: requested lease not found', code: 5 }] : [200, {}]));
  const client = new EtcdJsonClient({ endpoints: [`http://127.0.0.1:${closedPort}`, gateway.url] }, 2000);
  try {
    assert.equal(await client.get('/missing'), null);
    await assert.rejects(client.put('/k', 'v', '123'), (err: EtcdError) => err instanceof EtcdError && err.grpcCode === 5);
    assert.deepEqual(gateway.requests, ['/v3/kv/range', '/v3/kv/put']);
  } finally {
    client.close();
    gateway.server.close();
  }
});

test('an etcd that accepts and never answers fails the request at its deadline', async () => {
  const sockets: Socket[] = [];
  const silent = createNetServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const client = new EtcdJsonClient({ endpoints: [`http://127.0.0.1:${(silent.address() as AddressInfo).port}`] }, 300);
  try {
    await assert.rejects(client.getPrefix('/fanout/'), (err: Error) => /timeout|within/i.test(`${err.name} ${err.message} ${(err as { code?: string }).code ?? ''}`));
  } finally {
    client.close();
    for (const socket of sockets) socket.destroy();
    silent.close();
  }
});

test('an answer that is not JSON is an EtcdError naming the status', async () => {
  const server = createServer((_req, res) => res.writeHead(502).end('<html>bad gateway</html>'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = new EtcdJsonClient({ endpoints: [`http://127.0.0.1:${(server.address() as AddressInfo).port}`] }, 2000);
  try {
    await assert.rejects(client.get('/k'), (err: Error) => err instanceof EtcdError && /HTTP 502 and no JSON/.test(err.message));
  } finally {
    client.close();
    server.close();
  }
});

/** A listener that accepts connections and never answers: a hung etcd. */
async function hungEndpoint(): Promise<{ url: string; sockets: Socket[]; close(): void }> {
  const sockets: Socket[] = [];
  const server = createNetServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sockets,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

test('an endpoint that accepts and never answers is left for the next at its deadline, and the next is asked first from then on', async () => {
  const hung = await hungEndpoint();
  const gateway = await fakeGateway(() => [200, { kvs: [{ key: b64('/k'), value: b64('v'), create_revision: '3', mod_revision: '4' }] }]);
  const client = new EtcdJsonClient({ endpoints: [hung.url, gateway.url] }, 300);
  try {
    assert.equal((await client.get('/k'))?.value, 'v');
    assert.equal((await client.getPrefix('/'))[0]?.value, 'v');
    await client.put('/k', 'w');
    assert.equal(hung.sockets.length, 1, 'only the first request went to the hung endpoint');
    assert.deepEqual(gateway.requests, ['/v3/kv/range', '/v3/kv/range', '/v3/kv/put']);
  } finally {
    client.close();
    hung.close();
    gateway.server.close();
  }
});

test('a compare-and-put sent again after no answer counts as done when the key holds its value, and as refused when it holds another', async () => {
  // The first endpoint is an etcd that applies the write and whose answer never comes: the
  // second sees the guard fail on that very write.
  let held = '';
  const slow = createServer((req) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (text += chunk));
    req.on('end', () => {
      const body = JSON.parse(text) as { success: { request_put: { value: string } }[] };
      held = Buffer.from(body.success[0]!.request_put.value, 'base64').toString();
    });
  });
  await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
  const gateway = await fakeGateway(() => [200, { succeeded: false, responses: [{ response_range: { kvs: [{ key: b64('/k'), value: b64(held) }] } }] }]);
  const client = new EtcdJsonClient({ endpoints: [`http://127.0.0.1:${(slow.address() as AddressInfo).port}`, gateway.url] }, 300);
  const guard = [{ key: '/k', target: 'CREATE' as const, result: 'EQUAL' as const, revision: '0' }];
  try {
    assert.equal(await client.putIf(guard, '/k', 'mine'), true);
    held = 'theirs'; // now answered at once by the second endpoint: a plain refusal
    assert.equal(await client.putIf(guard, '/k', 'theirs'), false, 'not resent: a failed guard is a refusal even with an equal value');
  } finally {
    client.close();
    slow.closeAllConnections();
    slow.close();
    gateway.server.close();
  }
});
