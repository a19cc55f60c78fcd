import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { bodyText, ConnectionPool } from './index.js';

const TIMEOUTS = { connectMs: 5000, firstByteMs: 10_000, idleMs: 10_000 };

test('bodyText: the whole answer as text; one over the bound ends the response and rejects; the pool goes on', async () => {
  const server = createServer((req, res) => res.end(req.url === '/big' ? 'x'.repeat(300_000) : 'é'.repeat(20_000)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const pool = new ConnectionPool(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { connections: 1, timeouts: TIMEOUTS });
  try {
    assert.equal(await bodyText(await pool.get('/small', {}), pool.slabs), 'é'.repeat(20_000));
    await assert.rejects(bodyText(await pool.get('/big', {}), pool.slabs, 100_000), (err: Error) => err instanceof RangeError && /more than 100000 bytes/.test(err.message));
    // The one connection was closed with the cut answer; the next request gets a new one.
    assert.equal(await bodyText(await pool.get('/small', {}), pool.slabs, 100_000), 'é'.repeat(20_000));
  } finally {
    pool.destroy();
    server.close();
  }
});
