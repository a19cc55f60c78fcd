import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutClient, FanoutError } from './index.js';

test('a client with an endpoint that is not an http(s) URL fails at construction with INVALID_ARGUMENT', () => {
  for (const endpoint of ['notaurl', 'ftp://host:21', '127.0.0.1:7450', '', 'http://']) {
    assert.throws(
      () => new FanoutClient({ endpoint }),
      (err: unknown) => err instanceof FanoutError && err.code === 'INVALID_ARGUMENT' && err.message.includes('is not a worker URL'),
      endpoint,
    );
  }
  assert.throws(() => new FanoutClient({ endpoint: ['http://127.0.0.1:1', 'nope'] }), /"nope" is not a worker URL/);
});

test('http and https endpoints are accepted, with or without a trailing slash', async () => {
  for (const endpoint of ['http://127.0.0.1:7450', 'https://worker.example:7450/', 'http://[::1]:7450']) {
    const client = new FanoutClient({ endpoint });
    await client.close();
  }
});
