import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminClient, FanoutClient, type FanoutError } from '../../src/client/index.js';
import { everyWorker } from '../../src/cli/load.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { startCluster, TEST_ADMIN_TOKEN, type WorkerProcess } from '../harness/workers.js';
import { fanout } from '../harness/cli.js';

const MiB = 1024 * 1024;

/**
 * A SIGSTOPped worker during pin/unpin/free/ttl: it costs the client's first-byte deadline (here
 * 1.5 s instead of the default 30 s), not ten minutes, and the others still get the call.
 */
describe('admin calls while one worker is SIGSTOPped', () => {
  let workers: WorkerProcess[];
  let stopped: WorkerProcess;
  let source: string;
  let client: FanoutClient;
  let admin: AdminClient;
  let keys: string[];

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-stop-admin-'));
    await writeFile(join(source, 'a.bin'), randomBytes(MiB));
    workers = await startCluster(2, { mounts: { data: source }, pageSize: '1MiB' });
    stopped = workers[1]!;
    client = new FanoutClient({ endpoint: workers[0]!.url, token: TEST_ADMIN_TOKEN, timeouts: { firstByteMs: 1500 } });
    admin = new AdminClient(client);
    const info = await client.stat('/data/a.bin');
    const page = { mount: 'data', path: 'a.bin', version: info.version, size: info.size, index: 0 };
    await admin.load(workers[0]!.url, { pages: [page] }); // while every worker runs: the owner may be the one stopped next
    keys = [pageKey(page, MiB)];
    stopped.pause();
  });

  after(async () => {
    stopped?.resume();
    await client?.close();
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  // A bound on waiting: the old fixed 600 s deadline would exceed it.
  const bound = { timeout: 20_000 };

  test('pin, unpin, free and ttl on the stopped worker fail after the first-byte deadline, saying it timed out', bound, async () => {
    for (const call of [() => admin.pin(stopped.url, { keys }), () => admin.unpin(stopped.url, { keys }), () => admin.free(stopped.url, { keys }), () => admin.ttl(stopped.url, { keys, ttlMs: 1000 })]) {
      const started = Date.now();
      await assert.rejects(call(), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE' && /timed out/.test(e.message) && /1500 ms/.test(e.message));
      assert.ok(Date.now() - started < 8000, `gave up after ${Date.now() - started} ms`);
    }
  });

  test('a pin on every worker is applied on the running one, and the error names the stopped one', bound, async () => {
    const members = workers.map((w) => ({ id: w.id, url: w.url, capacity: 1 }));
    await assert.rejects(
      everyWorker('pin', members, (m) => admin.pin(m.url, { keys })),
      (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE' && /pin done on 1 of 2 workers, failed on 1/.test(e.message) && e.message.includes(`${stopped.id}:`) && !e.message.includes(`${workers[0]!.id}:`),
    );
    assert.deepEqual(await admin.unpin(workers[0]!.url, { keys }), { unpinned: 1 }, 'the running worker holds the pin');
  });

  // Without --admin-timeout the CLI waits out the default 30 s first-byte deadline.
  test('`fanout pin` exits non-zero naming the stopped worker, and the running one holds the pin', { timeout: 90_000 }, async () => {
    const started = Date.now();
    const r = await fanout(['pin', '/data/a.bin', '--endpoint', workers[0]!.url], { FANOUT_TOKEN: TEST_ADMIN_TOKEN });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr.toString(), new RegExp(`pin done on 1 of 2 workers, failed on 1: ${stopped.id}: .*timed out: no response within 30000 ms`));
    assert.ok(Date.now() - started < 60_000, `took ${Date.now() - started} ms`);
    assert.deepEqual(await admin.unpin(workers[0]!.url, { keys }), { unpinned: 1 }, 'the running worker holds the pin');
  });

  test('`fanout pin`, `ttl` and `load --pin` with --admin-timeout 2s give up on the stopped worker after 2 s', { timeout: 60_000 }, async () => {
    for (const args of [
      ['pin', '/data/a.bin'],
      ['ttl', '/data/a.bin', '1h'],
      ['load', '/data/a.bin', '--pin'],
    ]) {
      const started = Date.now();
      const r = await fanout([...args, '--endpoint', workers[0]!.url, '--admin-timeout', '2s'], { FANOUT_TOKEN: TEST_ADMIN_TOKEN });
      const took = Date.now() - started;
      assert.notEqual(r.code, 0, args.join(' '));
      // load's own call goes to the page's owner, which may be the stopped worker: it fails as fast.
      const failed = args[0] === 'load' ? `(pin done on 1 of 2 workers, failed on 1: ${stopped.id}: |${stopped.url}/v1/admin/load )` : `${args[0]} done on 1 of 2 workers, failed on 1: ${stopped.id}: `;
      assert.match(r.stderr.toString(), new RegExp(`${failed}.*timed out: no response within 2000 ms`));
      assert.ok(took < 20_000, `${args.join(' ')} took ${took} ms (the default would wait 30 s)`);
    }
    assert.deepEqual(await admin.unpin(workers[0]!.url, { keys }), { unpinned: 1 }, 'the running worker holds the pin');
  });

  test('--admin-timeout 0 or nonsense is refused before any call', async () => {
    for (const value of ['0', 'soon']) {
      const r = await fanout(['pin', '/data/a.bin', '--endpoint', workers[0]!.url, '--admin-timeout', value], { FANOUT_TOKEN: TEST_ADMIN_TOKEN });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr.toString(), /INVALID_ARGUMENT.*--admin-timeout/);
    }
  });
});
