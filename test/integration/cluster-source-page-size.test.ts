import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanout, sha256 } from '../harness/cli.js';
import { restartWithPageSize, startCluster, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/**
 * Cluster B reads cluster A (fanout://A), and A's worker restarts with another pageSize (1 MiB →
 * 2 MiB) under B's running worker. B's pages stay 1 MiB: it reads each of them from A by byte
 * range, in A's new pages. Before, B's SDK client kept asking A in 1 MiB pages and every read of a
 * file B did not hold failed (PAGE_SIZE_MISMATCH) until B's workers were restarted.
 */
describe('a cluster as the source of another, the source cluster changes its page size', () => {
  let source: string;
  let a: WorkerProcess[] = [];
  let b: WorkerProcess[] = [];
  const files = { before: randomBytes(3 * MiB + 5), after: randomBytes(5 * MiB + 4321) };

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-cs-ps-'));
    for (const [name, data] of Object.entries(files)) await writeFile(join(source, `${name}.bin`), data);
    a = await startCluster(1, { pageSize: '1MiB', mounts: { data: source } });
    b = await startCluster(1, { pageSize: '1MiB', statTtl: '100ms', mounts: { data: `fanout://${new URL(a[0]!.url).host}/data` } });
  });

  after(async () => {
    await Promise.all([...a, ...b].map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  test("B's reads of files it does not hold go on across A's change, right, at once", { timeout: 60_000 }, async () => {
    const cat = async (name: string) => {
      const result = await fanout(['cat', `/data/${name}`, '--endpoint', b[0]!.url, '--hedge', 'off']);
      assert.equal(result.code, 0, `fanout cat ${name} via B: ${result.stderr}`);
      return result.stdout;
    };
    assert.equal(sha256(await cat('before.bin')), sha256(files.before));
    await restartWithPageSize(a[0]!, '2MiB');
    assert.equal(sha256(await cat('after.bin')), sha256(files.after), 'a file B did not hold');
    assert.equal(sha256(await cat('before.bin')), sha256(files.before), 'a file B holds');
  });
});
