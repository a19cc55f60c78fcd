import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LineStatus, Member } from '../../src/core/types.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { freePort, waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

const GiB = 1024 ** 3;
/** The coordinator's line rate, and the other worker's (a config rolled out to one worker only). */
const FAST = 8_000_000;
const SLOW = 2_000_000;

async function lineOf(worker: WorkerProcess): Promise<LineStatus> {
  const status = (await (await fetch(`${worker.url}/v1/status`)).json()) as { lines: LineStatus[] };
  return status.lines.find((l) => l.line === 'wan')!;
}

async function cappedGrants(worker: WorkerProcess): Promise<number> {
  const text = await (await fetch(`${worker.url}/metrics`)).text();
  const match = /^fanout_line_grants_capped_total\{line="wan",bound="rate"\} (\d+)/m.exec(text);
  return match ? Number(match[1]) : 0;
}

/**
 * Two workers whose configs give one line different rates, the line's coordinator the larger.
 * The coordinator holds the line to the smaller (renewals carry each worker's rate); a worker
 * would still apply at most its own rate of any grant (lease.test.ts: an older or a bad peer).
 */
describe('workers configured with different rates for one line', () => {
  let source: string;
  let coordinator: WorkerProcess;
  let member: WorkerProcess;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-lines-differ-'));
    await writeFile(join(source, 'f.bin'), 'x');
    const ports = [await freePort(), await freePort()];
    const members: Member[] = ports.map((port, i) => ({ id: `w${i + 1}`, url: `http://127.0.0.1:${port}`, capacity: GiB }));
    // The coordinator of a line is the ring owner of its name, as every worker computes it.
    const coordinatorId = new HashRing(members).owners('line:wan', 1)[0]!.id;
    const staticList = members.map(({ id, url }) => ({ id, url, capacity: '1GiB' }));
    const started: WorkerProcess[] = [];
    for (const [i, port] of ports.entries()) {
      const rate = members[i]!.id === coordinatorId ? FAST : SLOW;
      started.push(await WorkerProcess.start({ id: members[i]!.id, lines: { wan: { rate } }, mounts: { data: { uri: source, line: 'wan' } }, membership: { static: staticList } }, port));
    }
    coordinator = started.find((w) => w.id === coordinatorId)!;
    member = started.find((w) => w.id !== coordinatorId)!;
  });

  after(async () => {
    await Promise.all([coordinator?.destroy(), member?.destroy()]);
    await rm(source, { recursive: true, force: true });
  });

  test('the coordinator holds the whole line to the least rate its workers are configured with, and says so once', async () => {
    const own = await lineOf(member);
    assert.equal(own.rate, SLOW);
    assert.equal(own.coordinator, coordinator.id, 'both workers take the same worker for the coordinator');
    assert.equal((await lineOf(coordinator)).rate, FAST);
    await waitFor('the other worker to be leased a share', async () => {
      const line = await lineOf(member);
      return line.mode === 'lease' && line.share > 0;
    });
    // Both idle. Before, the coordinator split its FAST rate, FAST / 2 each: the other worker
    // capped its grant to SLOW (counted, logged), the coordinator applied FAST / 2 itself.
    for (let i = 0; i < 5; i++) {
      const coordinating = (await lineOf(coordinator)).share;
      const other = (await lineOf(member)).share;
      assert.ok(coordinating <= SLOW && other <= SLOW, `shares ${coordinating} and ${other} B/s, each within the line's least configured rate ${SLOW}`);
      await new Promise((r) => setTimeout(r, 250)); // samples across renewals, not a timed assertion
    }
    // The coordinator says once that the configs differ; no grant exceeds a worker's own rate any more.
    const log = await readFile(join(coordinator.dir, 'worker.log'), 'utf8');
    assert.equal(log.split('\n').filter((l) => l.includes('workers are configured with different rates for it')).length, 1, log);
    assert.equal(await cappedGrants(member), 0, 'no grant above the worker\'s own rate');
    assert.equal(await cappedGrants(coordinator), 0, "the coordinator's own grants are within its rate");
  });
});
