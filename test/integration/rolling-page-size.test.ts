import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutClient } from '../../src/client/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { sha256 } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { forceUnmount, MountProcess, sh } from '../harness/mount.js';
import { waitFor } from '../harness/ports.js';
import { readAll } from '../harness/streams.js';
import { restartWithPageSize, startCluster, waitForRings, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** What one reader saw: reads that gave the file's bytes, gave other bytes, or failed (by error). */
interface Tally {
  right: number;
  wrong: string[];
  failed: string[];
}

/** One line per failure, the same failures counted once: "CODE message ×N". */
function summary(failed: string[]): string {
  const counts = new Map<string, number>();
  for (const f of failed) counts.set(f, (counts.get(f) ?? 0) + 1);
  return [...counts].map(([f, n]) => `${f} ×${n}`).join('\n');
}

interface Roll {
  workers: number;
  /** The page size the workers start with, and the one they are restarted with (MiB). */
  from: 1 | 2;
  to: 1 | 2;
  /** A FUSE mount reads in a loop too (three workers only: the machine's cores are few). */
  mount: boolean;
  /**
   * The worker during whose restart the occasional client reads a page whose candidates are all
   * restarted or down (the one down last of them with three workers: every member is a candidate).
   */
  probeAt: number;
  /** The occasional client's endpoint (its cluster answers come from there first): a worker's index. */
  probeEndpoint: 'all' | number;
  /** Why that page, for the failure message. */
  why: string;
}

/**
 * A rolling restart of a cluster's workers from pageSize 1 MiB to 2 MiB, or back (each restarted on its
 * port, the next once it is back in every ring) under readers that go on reading: one program's
 * FanoutClient (two reads at a time), with three workers a FUSE mount too, and a client that reads
 * now and then. For the time of the roll the cluster holds workers of both sizes, and the readers
 * count in one of them. An operator expects the roll to be invisible: reads may be retried, but
 * none may fail, and none may ever give other bytes than the file's.
 */
function rollingRestart(roll: Roll): void {
  const from = roll.from * MiB;
  const to = roll.to * MiB;
  describe(`a rolling restart of ${roll.workers} workers from ${roll.from} MiB to ${roll.to} MiB pages under reading clients${roll.mount ? ' and a mount' : ''}`, () => {
    let root: string;
    let source: string;
    let etcd: EtcdServer;
    let workers: WorkerProcess[] = [];
    let client: FanoutClient;
    // A client that reads now and then: its member list is the one it learnt before the roll.
    let occasional: FanoutClient;
    let mount: MountProcess | undefined;
    // Read in loops: 8 MiB and more each, so every read meets each worker in both sizes.
    const files: Record<string, Buffer> = { 'a.bin': randomBytes(9 * MiB + 4321), 'b.bin': randomBytes(8 * MiB + 17), 'c.bin': randomBytes(11 * MiB + 999) };
    const hashes = Object.fromEntries(Object.entries(files).map(([name, data]) => [name, sha256(data)]));
    // Read once, one page: 48 pages of the first size, so that one of them surely has the
    // candidates the probe needs whatever the file's version (three workers, the one down last of
    // the three: none of 48 pages in (2/3)^48 ≈ 4e-9; five, three of four restarted or down: 0.6^48 ≈ 2e-11).
    const probe = randomBytes(48 * from + 5);

    before(async () => {
      root = await mkdtemp(join(tmpdir(), 'fanout-roll-'));
      source = join(root, 'source');
      await mkdir(source);
      for (const [name, data] of Object.entries(files)) await writeFile(join(source, name), data);
      await writeFile(join(source, 'probe.bin'), probe);
      etcd = await startEtcd();
      workers = await startCluster(roll.workers, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: `${roll.from}MiB` });
      // Every worker as an endpoint, as a client of a cluster is configured; the first is asked first.
      client = new FanoutClient({ endpoint: workers.map((w) => w.url) });
      // Its own session (the refresh interval is part of a session's key): the busy client's reads
      // refresh their shared member list at every refusal, this one's stays as it was learnt.
      const endpoint = roll.probeEndpoint === 'all' ? workers.map((w) => w.url) : workers[roll.probeEndpoint]!.url;
      occasional = new FanoutClient({ endpoint, membershipRefreshMs: 600_000 });
      if (roll.mount) {
        await mkdir(join(root, 'mnt'));
        mount = await MountProcess.start(join(root, 'mnt'), workers[0]!.url, '--ttl', '200ms');
      }
    });

    after(async () => {
      await client?.close();
      await occasional?.close();
      await mount?.signal('SIGTERM');
      if (root) await forceUnmount(join(root, 'mnt'));
      await Promise.all(workers.map((w) => w.destroy()));
      await etcd?.stop();
      if (root) await rm(root, { recursive: true, force: true });
    });

    test('every read during and after the roll gives the file whole and right, and none fails', { timeout: 120_000 }, async () => {
      assert.equal((await client.cluster()).pageSize, from);
      const names = Object.keys(files);
      const sdk: Tally = { right: 0, wrong: [], failed: [] };
      const fuse: Tally = { right: 0, wrong: [], failed: [] };
      let rolling = true;
      // Which step of the roll each failure happened in, for the report.
      let phase = 'before the roll';
      // Reads after the roll: each reader goes on until it has read every file once more.
      const postRoll = { sdk: 0, fuse: 0 };

      const sdkLoop = async () => {
        for (let i = 0; rolling || postRoll.sdk < names.length; i++) {
          const name = names[i % names.length]!;
          if (!rolling) postRoll.sdk++;
          try {
            // Alternately a stream of the whole file and a range across pages of either size.
            if (i % 2 === 0) {
              const data = await readAll(await client.createReadStream(`/data/${name}`));
              if (sha256(data) === hashes[name]) sdk.right++;
              else sdk.wrong.push(`${name}: ${data.length} bytes, sha256 ${sha256(data)}`);
            } else {
              // Across pages of either size: from just below the first 1 MiB boundary.
              const start = MiB - 1000 + (i % 7) * 333;
              const end = files[name]!.length - 12345;
              const data = await readAll(await client.createReadStream(`/data/${name}`, { start, end }));
              if (data.equals(files[name]!.subarray(start, end))) sdk.right++;
              else sdk.wrong.push(`${name} [${start}, ${end}): ${data.length} bytes`);
            }
          } catch (err) {
            const e = err as { code?: string; message?: string };
            sdk.failed.push(`[${phase}] ${e.code ?? '?'} ${e.message ?? String(err)}`);
          }
        }
      };

      const fuseLoop = async () => {
        for (let i = 0; rolling || postRoll.fuse < names.length; i++) {
          const name = names[i % names.length]!;
          if (!rolling) postRoll.fuse++;
          const read = await sh('cat', [join(mount!.mountpoint, 'data', name)]);
          if (read.code !== 0) fuse.failed.push(`[${phase}] cat ${name} exit ${read.code}: ${read.stderr.trim()}`);
          else if (sha256(read.stdout) === hashes[name]) fuse.right++;
          else fuse.wrong.push(`${name}: ${read.stdout.length} bytes, sha256 ${sha256(read.stdout)}`);
        }
      };

      // The occasional client reads once before the roll: it counts in the first size, and its
      // member list holds every worker until it is refreshed.
      assert.equal(sha256(await readAll(await occasional.createReadStream('/data/a.bin'))), hashes['a.bin']);
      // While a worker is down and before anyone told the occasional client: a read of a page whose
      // candidates (the first three of its ring's order) are all restarted (refusing pages of the first size)
      // or down, the one down last of them.
      let occasionalRead: { start: number; candidates: string[]; data?: Buffer; err?: { code?: string; message?: string } } | undefined;
      const readWhileDown = async (down: string, restarted: Set<string>) => {
        const file = await occasional.stat('/data/probe.bin');
        for (let index = 0; index * from < file.size; index++) {
          const ref = { mount: file.mount, path: file.path, version: file.version, size: file.size, index };
          const candidates = occasional.session.ring.owners(pageKey(ref, from), 3).map((m) => m.id);
          if (!candidates.every((id) => restarted.has(id) || id === down) || candidates.slice(0, -1).includes(down)) continue;
          occasionalRead = { start: index * from, candidates };
          try {
            occasionalRead.data = await readAll(await occasional.createReadStream('/data/probe.bin', { start: index * from, end: (index + 1) * from }));
          } catch (err) {
            occasionalRead.err = err as { code?: string; message?: string };
          }
          return;
        }
      };

      const loops = Promise.all([sdkLoop(), sdkLoop(), ...(roll.mount ? [fuseLoop()] : [])]);
      const restarted = new Set<string>();
      try {
        // The readers have read in the first size before the roll starts.
        await waitFor('reads before the roll', async () => sdk.right + sdk.failed.length >= 3 && (!roll.mount || fuse.right + fuse.failed.length >= 3), 60_000);
        for (const [i, worker] of workers.entries()) {
          phase = `${worker.id} restarting`;
          await restartWithPageSize(worker, `${roll.to}MiB`, i === roll.probeAt ? () => readWhileDown(worker.id, restarted) : undefined);
          restarted.add(worker.id);
          phase = `${worker.id} back at ${roll.to} MiB, joining`;
          // Back in every ring before the next one goes, as a careful roll does.
          await waitForRings(workers, `${worker.id} back in every ring`, 30_000);
          phase = `${worker.id} at ${roll.to} MiB in every ring`;
        }
      } finally {
        rolling = false;
        phase = 'after the roll';
        await loops;
      }

      const report = `SDK: ${sdk.right} right, ${sdk.failed.length} failed:\n${summary(sdk.failed)}${roll.mount ? `\nmount: ${fuse.right} right, ${fuse.failed.length} failed:\n${summary(fuse.failed)}\nmount log:\n${mount!.log.slice(-3000)}` : ''}`;
      assert.ok(occasionalRead, `a page of probe.bin whose candidates are ${roll.why}`);
      const { start, candidates } = occasionalRead;
      const what = `the occasional client's read of the page at byte ${start} of probe.bin (candidates ${candidates.join(', ')}: ${roll.why})`;
      assert.equal(occasionalRead.err, undefined, `${what}: ${occasionalRead.err?.code} ${occasionalRead.err?.message}\n${report}`);
      assert.ok(occasionalRead.data!.equals(probe.subarray(start, start + from)), what);
      // Never other bytes than the file's, whatever else happens.
      assert.deepEqual(sdk.wrong, [], `the SDK read wrong bytes\n${report}`);
      assert.deepEqual(fuse.wrong, [], `the mount read wrong bytes\n${report}`);
      // The readers follow the cluster to its new page size.
      assert.equal((await client.cluster(true)).pageSize, to);
      // A rolling restart is invisible to readers: no read failed.
      assert.deepEqual(sdk.failed, [], `SDK reads failed during the roll\n${report}`);
      assert.deepEqual(fuse.failed, [], `mount reads failed during the roll\n${report}`);
      console.log(report.split('\nmount log:')[0]);
    });
  });
}

// Every member is each page's candidate. The probe: the last worker down, the other two at 2 MiB;
// before, the one down, tried last once it failed, gave the page's error: WORKER_UNAVAILABLE.
rollingRestart({ workers: 3, from: 1, to: 2, mount: true, probeAt: 2, probeEndpoint: 'all', why: 'the two restarted workers, then the one down' });
// More workers than a page has candidates (3). The probe: w1–w3 at 2 MiB, w4 down, the client
// asking w5 (still 1 MiB) for the cluster's facts; before, the page failed PAGE_SIZE_MISMATCH
// after its three candidates although w5 would relay it.
rollingRestart({ workers: 5, from: 1, to: 2, mount: false, probeAt: 3, probeEndpoint: 4, why: 'restarted or down, a worker of 1 MiB pages up beyond them' });
// Back (2 MiB → 1 MiB), as an operator undoing a roll does: the readers start counting in 2 MiB
// pages, a restarted worker refuses them, and a refused read goes on in 1 MiB pages. The probe as
// with 1 → 2: the last worker down, the other two at 1 MiB. No mount: the machine's cores are few.
rollingRestart({ workers: 3, from: 2, to: 1, mount: false, probeAt: 2, probeEndpoint: 'all', why: 'the two restarted workers, then the one down' });
