import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdJsonClient } from '../../src/lib/etcdjson/index.js';
import { createEtcdClient } from '../../src/lib/membership/index.js';
import type { NoAnswerMessage } from '../../src/lib/membership/endpoints.js';
import { forgetSharedEndpointPreferences } from '../../src/lib/membership/preferences.js';
import { fanout } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';

/** Each request's deadline here; a request that waited on the hung member takes at least this long. */
const DEADLINE_MS = 1500;

/**
 * Three etcd processes stand for three members; the first is SIGSTOPped (a hung member: TCP is
 * accepted, nothing answers). They are single-node clusters of their own, so that the other two
 * can die and come back one at a time without losing a quorum: these tests are about which
 * endpoint a client asks, and every request here is a read of a key none of them holds.
 */
describe('a hung etcd member is asked again only when no other answers', { timeout: 120_000 }, () => {
  let hung: EtcdServer;
  let b: EtcdServer;
  let c: EtcdServer;
  let stateDir: string;
  const stateBefore = process.env.FANOUT_ETCD_STATE;
  before(async () => {
    [hung, b, c] = await Promise.all([startEtcd(), startEtcd(), startEtcd()]);
    stateDir = await mkdtemp(join(tmpdir(), 'fanout-etcd-state-'));
    // This process keeps nothing between its tests; the commands it runs get a file of their own.
    process.env.FANOUT_ETCD_STATE = 'off';
  });
  after(async () => {
    if (stateBefore === undefined) delete process.env.FANOUT_ETCD_STATE;
    else process.env.FANOUT_ETCD_STATE = stateBefore;
    await Promise.all([hung, b, c].map((e) => e?.stop()));
    await rm(stateDir, { recursive: true, force: true });
  });
  // Each test starts as a new process would: the gRPC and JSON clients of one process share what they learn.
  beforeEach(() => forgetSharedEndpointPreferences());

  /**
   * Runs `read` through the scenario and counts the reads that waited out a deadline (by their
   * time, and by the client's own no-answer reports): the first read finds the hung member; then,
   * three times, the endpoint that answers dies (b, later c) and comes back, so the client must
   * move on; then 10 reads. Before, each move away from c went to the hung member, the next in the
   * configured order, and paid its deadline again: 4 reads of 17 paid it. Last, with b and c dead and the member resumed, a read
   * still gets its answer from it, although it is cooling down.
   */
  async function scenario(read: () => Promise<unknown>): Promise<{ slow: number; noAnswers: string[] }> {
    const noAnswers: string[] = [];
    const onNoAnswer = (message: unknown) => noAnswers.push((message as NoAnswerMessage).endpoint);
    let slow = 0;
    const timed = async () => {
      const started = Date.now();
      await read();
      if (Date.now() - started >= DEADLINE_MS) slow++;
    };
    subscribe('fanout:etcd:no-answer', onNoAnswer);
    hung.pause();
    try {
      await timed();
      for (let round = 0; round < 3; round++) {
        b.kill();
        await timed(); // b refused: c answers
        await b.restart();
        c.kill();
        await timed(); // c refused: b answers (before: the hung member, next in the configured order)
        await c.restart();
      }
      for (let i = 0; i < 10; i++) await timed();
      const counted = { slow, noAnswers: [...noAnswers] };
      hung.resume();
      b.kill();
      c.kill();
      await read(); // only the cooling member is left: it is asked, and answers
      return counted;
    } finally {
      unsubscribe('fanout:etcd:no-answer', onNoAnswer);
      hung.resume();
      await Promise.all([b, c].map((e) => e.restart().catch(() => undefined)));
    }
  }

  test('gRPC client (membership, release watches): one read of 17 pays the deadline', async () => {
    const client = createEtcdClient({ endpoints: [hung.endpoint, b.endpoint, c.endpoint] }, DEADLINE_MS);
    try {
      const { slow, noAnswers } = await scenario(() => client.get('/absent').string());
      assert.deepEqual(noAnswers, [hung.endpoint], 'one no-answer, from the hung member');
      assert.equal(slow, 1, 'one read waited out the deadline');
    } finally {
      client.close();
    }
  });

  test('JSON client (release commands): one read of 17 pays the deadline', async () => {
    const client = new EtcdJsonClient({ endpoints: [hung.endpoint, b.endpoint, c.endpoint] }, DEADLINE_MS);
    try {
      const { slow, noAnswers } = await scenario(() => client.get('/absent'));
      assert.deepEqual(noAnswers, [hung.endpoint], 'one no-answer, from the hung member');
      assert.equal(slow, 1, 'one read waited out the deadline');
    } finally {
      client.close();
    }
  });

  test('the JSON client of a process starts from what its gRPC client learned: the hung member costs one deadline, not one per client', async () => {
    const connection = { endpoints: [hung.endpoint, b.endpoint, c.endpoint] };
    const grpc = createEtcdClient(connection, DEADLINE_MS);
    const json = new EtcdJsonClient(connection, DEADLINE_MS);
    const noAnswers: string[] = [];
    const onNoAnswer = (message: unknown) => noAnswers.push((message as NoAnswerMessage).endpoint);
    subscribe('fanout:etcd:no-answer', onNoAnswer);
    hung.pause();
    try {
      // Counted by endpoint: a loaded machine may make b late too, which is not what this is about.
      const fromHung = () => noAnswers.filter((endpoint) => endpoint === hung.endpoint).length;
      await grpc.get('/absent').string();
      assert.equal(fromHung(), 1, 'the gRPC read waited on the hung member');
      assert.equal(await json.get('/absent'), null);
      assert.equal(fromHung(), 1, 'the JSON read did not wait on it (before: it asked the hung member, its own first endpoint, first)');
    } finally {
      unsubscribe('fanout:etcd:no-answer', onNoAnswer);
      hung.resume();
      grpc.close();
      json.close();
    }
  });

  test('a second fanout command does not ask the hung member first: the first left its cool-down in the state file', async () => {
    const etcd = [hung.endpoint, b.endpoint, c.endpoint].join(',');
    const env = { NODE_DEBUG: 'fanout', FANOUT_ETCD_STATE: join(stateDir, 'etcd-endpoints.json') };
    const listed = (result: { code: number; stdout: Buffer; stderr: string }) => {
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual((JSON.parse(result.stdout.toString()) as { versions: unknown[] }).versions, []);
    };
    // NODE_DEBUG=fanout's line for each request that waited out its deadline on an endpoint.
    const waitedOnHung = (stderr: string) => stderr.split('\n').filter((line) => line.includes(`etcd ${hung.endpoint} gave no answer within the deadline`)).length;
    hung.pause();
    try {
      const first = await fanout(['release', 'list', 'm', '--etcd', etcd, '--json'], env);
      listed(first);
      assert.ok(waitedOnHung(first.stderr) >= 1, `the first command found the member hung:\n${first.stderr}`);
      const second = await fanout(['release', 'list', 'm', '--etcd', etcd, '--json'], env);
      listed(second);
      assert.equal(waitedOnHung(second.stderr), 0, `the second command asked b first:\n${second.stderr}`);
      assert.match(second.stderr, new RegExp(`etcd ${hung.endpoint} gave no answer to an earlier command: asked last`));
      const off = await fanout(['release', 'list', 'm', '--etcd', etcd, '--json'], { ...env, FANOUT_ETCD_STATE: 'off' });
      listed(off);
      assert.ok(waitedOnHung(off.stderr) >= 1, 'FANOUT_ETCD_STATE=off: each command starts afresh');
    } finally {
      hung.resume();
    }
  });
});
