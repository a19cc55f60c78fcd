import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { EtcdJsonClient } from '../../src/lib/etcdjson/index.js';
import { createEtcdClient } from '../../src/lib/membership/index.js';
import type { NoAnswerMessage } from '../../src/lib/membership/endpoints.js';
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
  before(async () => {
    [hung, b, c] = await Promise.all([startEtcd(), startEtcd(), startEtcd()]);
  });
  after(async () => {
    await Promise.all([hung, b, c].map((e) => e?.stop()));
  });

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
});
