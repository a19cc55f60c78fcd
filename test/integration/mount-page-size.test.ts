import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../harness/cli.js';
import { MountProcess, sh, stopMountAndWorker } from '../harness/mount.js';
import { restartWithPageSize, WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/**
 * The cluster's workers restart with another pageSize (1 MiB → 2 MiB, and back) under a running
 * mount. The mount follows it (src/mount/pagesize.ts): the first page the workers refuse for its size
 * (PAGE_SIZE_MISMATCH) makes it drop every page it counted in the old size and count in the new
 * one, and the refused read is read again in the new size. Before, every page the mount did not
 * hold failed with EIO and a log line saying to remount, until someone did.
 */
for (const [from, to] of [[1, 2], [2, 1]] as const) {
  describe(`fanout mount, the cluster changes its page size (${from} MiB → ${to} MiB)`, () => {
    let source: string;
    let work: string;
    let worker: WorkerProcess;
    let mount: MountProcess;
    const big = randomBytes(5 * MiB + 4321);
    const small = randomBytes(300_000);
    const other = randomBytes(3 * MiB + 17);
    const held = randomBytes(4 * MiB + 999);

    before(async () => {
      source = await mkdtemp(join(tmpdir(), 'fanout-ps-src-'));
      work = await mkdtemp(join(tmpdir(), 'fanout-ps-'));
      await writeFile(join(source, 'big.bin'), big);
      await writeFile(join(source, 'small.bin'), small);
      await writeFile(join(source, 'other.bin'), other);
      await writeFile(join(source, 'held.bin'), held);
      worker = await WorkerProcess.start({ id: 'ps', mounts: { data: source }, pageSize: `${from}MiB` });
      await mkdir(join(work, 'mnt'));
      mount = await MountProcess.start(join(work, 'mnt'), worker.url, '--ttl', '200ms');
    });

    after(async () => {
      await stopMountAndWorker(mount, worker, join(work, 'mnt'), source, work);
    });

    test('the mount follows the new page size: unread files, files it read before and a file kept open are read whole and right, and the change is logged once', { timeout: 120_000 }, async () => {
      const path = (name: string) => join(mount.mountpoint, 'data', name);
      const first = await sh('cat', [path('big.bin')]);
      assert.equal(first.code, 0, first.stderr.toString());
      assert.equal(sha256(first.stdout), sha256(big));
      // A file left open across the change, half read: its handle addresses bytes, and goes on.
      const kept = await open(path('held.bin'));
      const head = Buffer.alloc(Math.floor(1.5 * MiB));
      assert.equal((await kept.read(head, 0, head.length, 0)).bytesRead, head.length);
      await restartWithPageSize(worker, `${to}MiB`);

      // Unread files, two at once, and the rest of the open one (all meet the refusal), then the file read before.
      const rest = Buffer.alloc(held.length - head.length);
      const [unreadSmall, unreadOther, restRead] = await Promise.all([sh('cat', [path('small.bin')]), sh('cat', [path('other.bin')]), kept.read(rest, 0, rest.length, head.length)]);
      await kept.close();
      assert.equal(restRead.bytesRead, rest.length);
      assert.equal(sha256(Buffer.concat([head, rest])), sha256(held), 'the file kept open, read across the change');
      for (const [read, data, name] of [[unreadSmall, small, 'small.bin'], [unreadOther, other, 'other.bin'], [await sh('cat', [path('big.bin')]), big, 'big.bin']] as const) {
        assert.equal(read.code, 0, `${name}: ${read.stderr.toString()}`);
        assert.equal(sha256(read.stdout), sha256(data), `${name} after the page size changed`);
      }
      // A random read across the 1 MiB boundary: between two pages of one size, inside a page of the other.
      const span = await sh('dd', [`if=${path('big.bin')}`, 'bs=1000', 'skip=1000', 'count=100', 'status=none']);
      assert.equal(span.code, 0, span.stderr.toString());
      assert.ok(span.stdout.equals(big.subarray(1_000_000, 1_100_000)), 'a span across the old page boundary');
      const changes = mount.log.match(/[^\n]*pageSize changed from[^\n]*/g) ?? [];
      assert.equal(changes.length, 1, `logged once: ${mount.log}`);
      assert.match(changes[0]!, new RegExp(`"code":"PAGE_SIZE_MISMATCH".*"mountPageSize":${from * MiB}.*"clusterPageSize":${to * MiB}.*from ${from * MiB} to ${to * MiB} bytes`));
      assert.doesNotMatch(mount.log, /failed: EIO/);
    });
  });
}
