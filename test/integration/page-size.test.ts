import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { isFanoutError } from '../../src/core/errors.js';
import { PeerCredential } from '../../src/lib/auth/index.js';
import { pagePath } from '../../src/lib/wire/index.js';
import { freePort } from '../harness/ports.js';
import { TEST_CLUSTER_SECRET, WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/**
 * Two workers of one cluster configured with different page sizes (1 MiB and 2 MiB). A reader
 * counting pages of 1 MiB that asks the 2 MiB worker for page 1 of a 3 MiB file would be sent
 * that worker's page 1, bytes [2 MiB, 3 MiB): 1 MiB, the length the reader expects, with a CRC32
 * that matches them. Page requests say the page size they count in, and a worker with another one
 * refuses them, so no reader can take those bytes for its own page 1.
 */
describe('workers with different page sizes', () => {
  let dir: string;
  let small: WorkerProcess;
  let large: WorkerProcess;
  const data = randomBytes(3 * MiB);
  let version: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-pagesize-'));
    await writeFile(join(dir, 'f.bin'), data);
    const ports = [await freePort(), await freePort()];
    const members = ports.map((port, i) => ({ id: `w${i + 1}`, url: `http://127.0.0.1:${port}` }));
    small = await WorkerProcess.start({ id: 'w1', mounts: { data: dir }, pageSize: '1MiB', membership: { static: members } }, ports[0]);
    large = await WorkerProcess.start({ id: 'w2', mounts: { data: dir }, pageSize: '2MiB', membership: { static: members } }, ports[1]);
    ({ version } = (await (await fetch(`${small.url}/v1/stat/data/f.bin`)).json()) as { version: string });
  });
  after(async () => {
    await Promise.all([small, large].map((w) => w?.destroy()));
    await rm(dir, { recursive: true, force: true });
  });

  const page1 = () => ({ mount: 'data', path: 'f.bin', version, size: data.length, index: 1 });
  // Read by the worker asked, not relayed to the page's owner (which the file's version decides:
  // a relay would go out in the asking worker's page size, and the 1 MiB owner would refuse it).
  // Direct reads are for peers: the cluster's credential goes with them.
  const direct = () => ({ 'x-fanout-direct': '1', ...new PeerCredential(TEST_CLUSTER_SECRET).headers() });

  test('without the page size, a request is answered in the worker’s own pages (curl, earlier readers)', async () => {
    const res = await fetch(`${large.url}${pagePath(page1())}`, { headers: direct() });
    assert.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    assert.ok(body.equals(data.subarray(2 * MiB)), "the 2 MiB worker's page 1: same length as a 1 MiB reader's page 1, other bytes");
  });

  test('a page request counted in another page size is refused with PAGE_SIZE_MISMATCH', async () => {
    const res = await fetch(`${large.url}${pagePath(page1(), MiB)}`, { headers: direct() });
    assert.equal(res.status, 409);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'PAGE_SIZE_MISMATCH');
    assert.match(body.error.message, /2097152.*1048576/);
    const same = await fetch(`${large.url}${pagePath(page1(), 2 * MiB)}`, { headers: direct() });
    assert.equal(same.status, 200, 'the same page size is served');
    await same.arrayBuffer();
    const metrics = await (await fetch(`${large.url}/metrics`)).text();
    assert.match(metrics, /^fanout_request_errors_total\{code="PAGE_SIZE_MISMATCH"\} [1-9]/m, 'operators see the refusals');
  });

  test('so is a batch of pages', async () => {
    const res = await fetch(`${large.url}/v1/pages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ items: [page1()], pageSize: MiB }),
    });
    assert.equal(res.status, 409);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'PAGE_SIZE_MISMATCH');
  });

  test('a worker relaying to an owner of another page size gets the refusal, and passes it on', async () => {
    // Whichever worker owns page 0 or 1 in its own ring, one of the two workers asked relays (or
    // serves): every answer is the right page of that worker or PAGE_SIZE_MISMATCH.
    for (const worker of [small, large]) {
      const own = worker === small ? MiB : 2 * MiB;
      for (const index of [0, 1]) {
        const res = await fetch(`${worker.url}${pagePath({ ...page1(), index }, own)}`);
        if (res.status === 200) {
          const body = Buffer.from(await res.arrayBuffer());
          assert.ok(body.equals(data.subarray(index * own, (index + 1) * own)), `page ${index} of ${own}`);
        } else {
          assert.equal(res.status, 409);
          assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'PAGE_SIZE_MISMATCH');
        }
      }
    }
  });

  test('a page reader counts in its own page size whatever the cluster’s (the mount keeps one per size it follows)', async () => {
    const client = new FanoutClient({ endpoint: small.url, hedge: 'off' });
    try {
      assert.equal((await client.cluster()).pageSize, MiB, "the endpoint's answer");
      const file = { mount: 'data', path: 'f.bin', version, size: data.length, mtimeMs: 0 };
      for (const [size, expected] of [[MiB, data.subarray(MiB, 2 * MiB)], [2 * MiB, data.subarray(2 * MiB)]] as const) {
        // Each worker refuses the other size: the reader finds the one of its size, whatever the endpoint says.
        const page = Buffer.concat(await client.pageReader(size).fetchPage(file, 1));
        assert.ok(page.equals(expected), `page 1 in pages of ${size}`);
      }
    } finally {
      await client.close();
    }
  });

  test('a reader through the cluster gets the file or that error, never another span’s bytes', async () => {
    for (const endpoint of [small.url, large.url]) {
      const client = new FanoutClient({ endpoint, hedge: 'off' });
      try {
        const stream = await client.createReadStream('/data/f.bin');
        const parts: Buffer[] = [];
        for await (const chunk of stream) parts.push(chunk as Buffer);
        assert.ok(Buffer.concat(parts).equals(data), `the file's bytes, through ${endpoint}`);
      } catch (err) {
        assert.ok(isFanoutError(err, 'PAGE_SIZE_MISMATCH'), `through ${endpoint}: ${String(err)}`);
      } finally {
        await client.close();
      }
    }
  });
});
