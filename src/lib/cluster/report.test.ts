import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpPageReporter } from './report.js';

const ref = { mount: 'data', path: 'f.bin', version: 'v1', size: 10, index: 0 };

async function answeredBy(handler: RequestListener): Promise<unknown> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const reporter = new HttpPageReporter({ timeoutMs: 2000 });
  try {
    return await reporter.report({ id: 'w1', capacity: 0, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }, ref);
  } finally {
    await reporter.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

test('a report resolves with what the worker found in its copy', async () => {
  assert.equal(await answeredBy((_req, res) => res.end(JSON.stringify({ result: 'corrupt' }))), 'corrupt');
  assert.equal(await answeredBy((_req, res) => res.end(JSON.stringify({ result: 'gone?' }))), undefined);
  assert.equal(await answeredBy((_req, res) => ((res.statusCode = 500), res.end('{}'))), undefined);
});

test('an answer far longer than a report\'s (a broken or hostile peer) is not read on, and the report never rejects', async () => {
  const huge = Buffer.alloc(1024 * 1024, 0x20);
  assert.equal(await answeredBy((_req, res) => res.end(Buffer.concat([Buffer.from('{"result":"corrupt"'), huge, Buffer.from('}')]))), undefined);
  assert.equal(await answeredBy((_req, res) => res.end('not json')), undefined);
});
