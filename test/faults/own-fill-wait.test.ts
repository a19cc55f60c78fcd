import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Origin } from '../harness/origin.js';
import { freePort, waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';
import { assertAlive, get, page, sha, stat } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * A worker reading its own cold page in-process (the /v1/data route, the S3 gateway: the page
 * service's fill, joined without a loopback request) behind a fill slot that does not free: one
 * fill slot for the mount, held by a source read that sent its headers and then nothing, under
 * source deadlines long enough to keep it (a trickling or very slow source holds its slot as
 * long, within its idle deadline). The loopback request this path replaced gave up after
 * timeouts.peerFilling of 102 "filling" answers; the in-process wait must too.
 */
describe("a worker's own cold page waiting for a fill slot that does not free", () => {
  let origin: Origin;
  let worker: WorkerProcess;
  let gateway: string;
  const held = randomBytes(MiB);
  const queued = randomBytes(MiB);

  before(async () => {
    origin = await Origin.start();
    await origin.put('held.bin', held);
    await origin.put('queued.bin', queued);
    const gatewayPort = await freePort();
    gateway = `http://127.0.0.1:${gatewayPort}`;
    worker = await WorkerProcess.start({
      id: 'own-fill-wait',
      gateway: { listen: `127.0.0.1:${gatewayPort}`, anonymous: true },
      pageSize: '1MiB',
      mounts: { web: origin.url },
      limits: { fillsPerMount: 1 },
      timeouts: { sourceFirstByte: '10m', sourceIdle: '10m', peerFilling: '2s' },
    });
  });

  after(async () => {
    const log = worker ? await readFile(join(worker.dir, 'worker.log'), 'utf8').catch(() => '') : '';
    await worker?.destroy();
    await origin?.close(); // also ends the hung answer
    assert.doesNotMatch(log, /uncaught|unhandled|"INTERNAL"/i, log.slice(0, 2000));
  });

  test('a /v1/data read and an S3 GetObject queued behind it fail within timeouts.peerFilling, naming the wait; the worker stays up and reads once the slot frees', { timeout: 60_000 }, async () => {
    origin.behave({ hang: 'headers' }, 'held.bin');
    // The fill of held.bin is held by a reader that waits as long as it takes: a client of the page
    // route, told 102 "filling" while the source sends nothing.
    const { info } = await stat(worker, '/web/held.bin');
    const holder = page(worker, '/web/held.bin', info!.version, info!.size, 0);
    // The only fill slot is taken: the source has the GET of held.bin, answered with headers only.
    await waitFor('the source read holding the slot', async () => origin.counters.log.some((r) => r.method === 'GET' && r.path === 'held.bin'));

    const waiting = await get(`${worker.url}/v1/data/web/queued.bin`);
    // Before: no answer at all while the slot was held (10 min here: the source's idle deadline).
    assert.ok(waiting.status >= 500, `HTTP ${waiting.status}: ${waiting.message}`);
    assert.equal(waiting.code, 'WORKER_UNAVAILABLE', waiting.message);
    assert.match(waiting.message!, /had no byte of page 0 of \/web\/queued\.bin after 2000 ms \(queued for a fill slot of its mount, or waiting for the source's first byte; timeouts\.peerFilling\)/);
    assert.ok(!origin.counters.log.some((r) => r.method === 'GET' && r.path === 'queued.bin'), 'queued.bin was read while the slot was held');
    // The S3 gateway's GetObject takes the same in-process path.
    const s3 = await get(`${gateway}/web/queued.bin`);
    assert.equal(s3.status, 503, s3.body.toString());
    assert.match(s3.body.toString(), /<Code>ServiceUnavailable<\/Code>.*had no byte of page 0 of \/web\/queued\.bin after 2000 ms .*timeouts\.peerFilling/s);
    assert.ok(!origin.counters.log.some((r) => r.method === 'GET' && r.path === 'queued.bin'), 'queued.bin was read while the slot was held');
    await assertAlive(worker);

    // The hung read ends (the origin cuts it): the slot frees, and the page that waited reads.
    origin.normal();
    origin.cutConnections();
    // Its reader is answered (an error, or a cut connection: it was told 102 before).
    const ended = await holder.catch((err: Error) => err.message);
    assert.ok(typeof ended === 'string' || ended.status >= 500 || ended.cut || ended.failedLate, JSON.stringify(ended));
    const again = await get(`${worker.url}/v1/data/web/queued.bin`);
    assert.equal(again.status, 200, again.message);
    assert.equal(sha(again.body), sha(queued));
  });
});
