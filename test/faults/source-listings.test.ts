import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MisbehavingS3 } from '../harness/s3misbehaving.js';
import { WorkerProcess } from '../harness/workers.js';
import { freePort } from '../harness/ports.js';
import { assertAlive } from './helpers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Many listings at once of an S3 server that hands out a fresh continuation token with every page
 * (each listing would run until limits.sourceListEntries or timeouts.sourceList, 10 min): a worker
 * process runs at most limits.sourceListings of them, queues limits.sourceListingsQueued, answers
 * the next 503 OVERLOADED with Retry-After, and stops a listing once every client asking for it left.
 */
describe('a worker listing an S3 server whose listings never end', () => {
  let s3: MisbehavingS3;
  let worker: WorkerProcess;
  let gateway: string;

  before(async () => {
    s3 = await MisbehavingS3.start();
    s3.behave({ listing: 'endless' });
    const gatewayPort = await freePort();
    gateway = `http://127.0.0.1:${gatewayPort}`;
    worker = await WorkerProcess.start({
      id: 'source-listings',
      mounts: { s3m: 's3://b' },
      gateway: { listen: `127.0.0.1:${gatewayPort}`, anonymous: true },
      s3: { endpoint: s3.url, accessKeyId: 'test', secretAccessKey: 'test', region: 'us-east-1' },
      limits: { sourceListings: 2, sourceListingsQueued: 1 },
    });
  });
  after(async () => {
    await worker?.destroy();
    await s3?.close();
  });

  /** Lists requested by the worker over `ms`. */
  const listsOver = async (ms: number) => {
    const before = s3.counters.lists;
    await sleep(ms);
    return s3.counters.lists - before;
  };

  test('past limits.sourceListings running and limits.sourceListingsQueued waiting, a listing is answered 503 OVERLOADED with Retry-After; a client that leaves stops its listing', { timeout: 60_000 }, async () => {
    const clients = [new AbortController(), new AbortController(), new AbortController()];
    const answers = clients.map((c, i) => fetch(`${worker.url}/v1/list/s3m/dir${i}`, { signal: c.signal }).catch(() => undefined));
    // Two run (their pages keep coming), the third waits.
    const deadline = Date.now() + 10_000;
    while (s3.counters.lists < 20 && Date.now() < deadline) await sleep(50);
    await sleep(300);
    const over = await fetch(`${worker.url}/v1/list/s3m/dir3`);
    // Before: 200 never came; the worker started a fourth endless listing beside the others.
    assert.equal(over.status, 503);
    assert.equal(over.headers.get('retry-after'), '1');
    const body = (await over.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'OVERLOADED');
    assert.match(body.error.message, /limits\.sourceListings/);
    assert.ok((await listsOver(500)) > 0, 'the two listings are running');

    for (const c of clients) c.abort();
    await Promise.all(answers);
    await sleep(500);
    // Before: the listings went on for timeouts.sourceList (10 min) after their clients left.
    assert.equal(await listsOver(1000), 0, 'no list request once every client left');
    await assertAlive(worker);

    s3.behave({});
    const listed = await fetch(`${worker.url}/v1/list/s3m/fine`);
    assert.equal(listed.status, 200, 'the slots are free again');
  });

  test('an S3 gateway client that gives up on a ListObjectsV2 stops the source listing it waited for', { timeout: 60_000 }, async () => {
    s3.behave({ listing: 'endless' });
    const client = new AbortController();
    const answer = fetch(`${gateway}/s3m?list-type=2&prefix=${encodeURIComponent('gw/')}&delimiter=/`, { signal: client.signal }).catch(() => undefined);
    const deadline = Date.now() + 10_000;
    const start = s3.counters.lists;
    while (s3.counters.lists - start < 10 && Date.now() < deadline) await sleep(50);
    assert.ok((await listsOver(300)) > 0, 'the listing is running');
    client.abort();
    await answer;
    await sleep(500);
    // Before: the gateway's listings had no signal: it went on for timeouts.sourceList (10 min).
    assert.equal(await listsOver(1000), 0, 'no list request once the client left');
    await assertAlive(worker);
    s3.behave({});
  });
});
