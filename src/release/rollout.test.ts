import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import type { AgentState, ChannelRecord } from './registry.js';
import { rollout, type RolloutEvent } from './rollout.js';
import { followedVersion, type ChannelState } from './scope.js';

/**
 * An in-memory release index with simulated agents: each sleep of the rollout is one step of
 * time, in which every agent whose followed version differs from its current one moves a phase
 * (staging, then switched), unless it is set to fail.
 */
class FakeFleet {
  channels: Record<string, ChannelState> = {};
  agents: AgentState[] = [];
  failing = new Set<string>();
  private revision = 1;
  time = 0;
  events: RolloutEvent[] = [];

  addAgent(host: string, datacenter: string, current: string): void {
    this.agents.push({ host, channel: 'prod', datacenter, dir: '/r', current, target: current, phase: 'idle', bytesDone: 0, bytesTotal: 0, bytesLocal: 0, bytesFetched: 0, error: null, updatedAt: 't0' });
  }

  registry = {
    getVersion: async (_name: string, version: string) => {
      if (!['v1', 'v2'].includes(version)) throw new FanoutError('RELEASE_NOT_FOUND', version);
      return {} as never;
    },
    getChannel: async (_name: string, channel: string) => this.channels[channel] ?? null,
    listAgents: async () => this.agents.map((a) => ({ ...a })),
    promote: async (_name: string, channel: string, version: string, _expect?: string, seed: string[] = []) => {
      const current = this.channels[channel];
      // As the registry: the version itself never in its history (a promotion made twice is one).
      const record: ChannelRecord = { version, history: (current ? [current.record.version, ...current.record.history] : seed).filter((v) => v !== version), updatedAt: '' };
      this.channels[channel] = { record, modRevision: String(++this.revision) };
      return { previous: current?.record.version ?? null, record };
    },
  };

  /** One step of every agent towards what it follows. */
  step(): void {
    this.time += 1000;
    for (const a of this.agents) {
      const target = followedVersion(this.channels, a.channel, a.datacenter)?.record.version ?? null;
      if (target === null || (a.current === target && a.phase === 'idle')) continue;
      const updatedAt = `t${this.time}`;
      if (this.failing.has(a.host)) Object.assign(a, { target, phase: 'error', error: 'HASH_MISMATCH: page 0', updatedAt });
      else if (a.phase !== 'staging') Object.assign(a, { target, phase: 'staging', updatedAt });
      else Object.assign(a, { current: target, phase: 'idle', error: null, updatedAt });
    }
  }

  options(extra: Partial<Parameters<typeof rollout>[0]> = {}) {
    return {
      registry: this.registry,
      name: 'llm',
      channel: 'prod',
      version: 'v2',
      canary: 'dc-a',
      timeoutMs: 60_000,
      now: () => this.time,
      sleep: async () => this.step(),
      onEvent: (e: RolloutEvent) => this.events.push(e),
      ...extra,
    };
  }
}

function fleet(): FakeFleet {
  const f = new FakeFleet();
  void f.registry.promote('llm', 'prod', 'v1');
  for (const dc of ['dc-a', 'dc-b', 'dc-c']) for (const i of [1, 2]) f.addAgent(`${dc}-h${i}`, dc, 'v1');
  return f;
}

const versions = (f: FakeFleet) => Object.fromEntries(f.agents.map((a) => [a.host, a.current]));

test('rollout promotes the canary, waits for all its hosts, then each --then datacenter in turn', async () => {
  const f = fleet();
  const waves = await rollout(f.options({ then: ['dc-b', 'dc-c'] }));
  assert.deepEqual(waves.map((w) => [w.wave, w.channel, w.hosts.length]), [['dc-a', 'prod@dc-a', 2], ['dc-b', 'prod@dc-b', 2], ['dc-c', 'prod@dc-c', 2]]);
  assert.ok(Object.values(versions(f)).every((v) => v === 'v2'));
  // dc-b was promoted only after both canary hosts had switched.
  const promotedB = f.events.findIndex((e) => e.event === 'promoted' && e.wave === 'dc-b');
  const canaryDone = f.events.findIndex((e) => e.event === 'switched' && e.wave === 'dc-a');
  assert.ok(canaryDone >= 0 && canaryDone < promotedB);
  assert.deepEqual(f.channels['prod@dc-a']!.record.history, ['v1'], 'the canary scope can roll back to what it followed');
});

test('rollout --rest moves the plain channel last: every host, in every datacenter', async () => {
  const f = fleet();
  const waves = await rollout(f.options({ rest: true }));
  assert.deepEqual(waves.map((w) => w.wave), ['dc-a', 'rest']);
  assert.equal(f.channels.prod!.record.version, 'v2');
  assert.ok(Object.values(versions(f)).every((v) => v === 'v2'));
});

test('a failing canary host stops the rollout with ROLLOUT_FAILED and leaves the other datacenters untouched', async () => {
  const f = fleet();
  f.failing.add('dc-a-h2');
  await assert.rejects(rollout(f.options({ then: ['dc-b'], rest: true })), (err: FanoutError) => err.code === 'ROLLOUT_FAILED' && /dc-a-h2: HASH_MISMATCH/.test(err.message));
  assert.equal(f.channels['prod@dc-b'], undefined);
  assert.equal(f.channels.prod!.record.version, 'v1');
  assert.equal(versions(f)['dc-b-h1'], 'v1');
});

test('an error reported before the promotion does not fail the rollout; the host gets its new try', async () => {
  const f = fleet();
  Object.assign(f.agents[0]!, { phase: 'error', target: 'v2', error: 'DISK_FULL: earlier attempt' });
  const waves = await rollout(f.options());
  assert.deepEqual(waves.map((w) => w.wave), ['dc-a']);
  assert.equal(versions(f)['dc-a-h1'], 'v2');
});

test('a canary host whose installed tree under the version name conflicts (RELEASE_EXISTS, current = the version, phase error) is not switched: no later wave is promoted', async () => {
  const conflict = 'RELEASE_EXISTS: app@v2 is published with manifest b…, but this host installed v2 with manifest a… and other files';
  // Reporting again after the promotion: the wave fails at once.
  const f = fleet();
  Object.assign(f.agents[0]!, { current: 'v2', target: 'v2', phase: 'error', error: conflict });
  f.failing.add('dc-a-h1');
  await assert.rejects(rollout(f.options({ then: ['dc-b'], rest: true })), (err: FanoutError) => err.code === 'ROLLOUT_FAILED' && /dc-a-h1/.test(err.message));
  assert.equal(f.channels['prod@dc-b'], undefined);
  // Its record unchanged since before the promotion (an agent run with --once): never counted
  // as switched, the wave times out and dc-b stays where it was.
  const still = fleet();
  Object.assign(still.agents[0]!, { current: 'v2', target: 'v2', phase: 'error', error: conflict });
  const listAgents = still.registry.listAgents;
  still.registry.listAgents = async () => (await listAgents()).map((a) => (a.host === 'dc-a-h1' ? { ...a, current: 'v2', target: 'v2', phase: 'error' as const, error: conflict, updatedAt: 't0' } : a));
  await assert.rejects(rollout(still.options({ timeoutMs: 5000, then: ['dc-b'] })), (err: FanoutError) => err.code === 'ROLLOUT_TIMEOUT' && /1 of 2 host\(s\) of dc-a/.test(err.message));
  assert.equal(still.channels['prod@dc-b'], undefined);
});

test('a canary that does not switch in time fails with ROLLOUT_TIMEOUT; no datacenter means nothing is promoted', async () => {
  const f = fleet();
  f.registry.listAgents = async () => f.agents.map((a) => ({ ...a, phase: 'staging' as const, current: 'v1' }));
  await assert.rejects(rollout(f.options({ timeoutMs: 5000, rest: true })), (err: FanoutError) => err.code === 'ROLLOUT_TIMEOUT');
  assert.equal(f.channels.prod!.record.version, 'v1');

  const empty = fleet();
  await assert.rejects(rollout(empty.options({ canary: 'dc-z' })), (err: FanoutError) => err.code === 'ROLLOUT_FAILED' && /nothing to canary/.test(err.message));
  assert.equal(empty.channels['prod@dc-z'], undefined);
  await assert.rejects(rollout(empty.options({ version: 'v9' })), (err: FanoutError) => err.code === 'RELEASE_NOT_FOUND');
  await assert.rejects(rollout(empty.options({ then: ['dc-a'] })), (err: FanoutError) => err.code === 'INVALID_ARGUMENT');
});

test('a wave whose hosts all drop out (cut off, stopped) fails instead of passing', async () => {
  const f = fleet();
  const listAgents = f.registry.listAgents;
  let calls = 0;
  // Present when the rollout checks and snapshots the canary, gone once it waits.
  f.registry.listAgents = async () => (++calls <= 2 ? listAgents() : (await listAgents()).filter((a) => a.datacenter !== 'dc-a'));
  await assert.rejects(rollout(f.options({ rest: true })), (err: FanoutError) => err.code === 'ROLLOUT_FAILED' && /dropped out/.test(err.message));
  assert.equal(f.channels.prod!.record.version, 'v1');
});

test('etcd unavailable for a few polls while a wave waits: the rollout reads again at the next poll and completes', async () => {
  const f = fleet();
  const listAgents = f.registry.listAgents;
  let calls = 0;
  // Answers the check and the snapshot before the promotion, then fails polls 1–4 (a 4 s stall at 1 s polls).
  f.registry.listAgents = async () => {
    calls++;
    if (calls >= 3 && calls <= 6) throw new FanoutError('ETCD_UNAVAILABLE', 'etcd (127.0.0.1:2379) unavailable: cannot list agents: deadline exceeded');
    return listAgents();
  };
  const waves = await rollout(f.options({ then: ['dc-b'] }));
  assert.deepEqual(waves.map((w) => [w.wave, w.hosts.length]), [['dc-a', 2], ['dc-b', 2]]);
  assert.equal(f.events.filter((e) => e.event === 'etcd-unavailable').length, 1, 'the outage is told once, not at every poll');
});

test('etcd still unavailable when the wave times out: ETCD_UNAVAILABLE saying the wave was promoted', async () => {
  const f = fleet();
  const listAgents = f.registry.listAgents;
  let calls = 0;
  f.registry.listAgents = async () => {
    if (++calls >= 3) throw new FanoutError('ETCD_UNAVAILABLE', 'etcd unavailable: cannot list agents');
    return listAgents();
  };
  await assert.rejects(rollout(f.options({ timeoutMs: 5000, then: ['dc-b'] })), (err: FanoutError) => err.code === 'ETCD_UNAVAILABLE' && /dc-a was promoted, later waves were not/.test(err.message));
  assert.ok(calls > 4, 'polled until the timeout');
  assert.equal(f.channels['prod@dc-b'], undefined);
});

/** listAgents failing with ETCD_UNAVAILABLE `times` times once the canary has switched: before dc-b's promotion. */
function stallAfterCanary(f: FakeFleet, times: number): { failures: () => number } {
  const listAgents = f.registry.listAgents;
  let failures = 0;
  f.registry.listAgents = async () => {
    const canaryDone = f.events.some((e) => e.event === 'switched' && e.wave === 'dc-a');
    if (canaryDone && !f.channels['prod@dc-b'] && failures < times) {
      failures++;
      throw new FanoutError('ETCD_UNAVAILABLE', 'etcd (127.0.0.1:2379) unavailable: cannot list agents: deadline exceeded');
    }
    return listAgents();
  };
  return { failures: () => failures };
}

test("etcd unavailable while the next wave's hosts are read before its promotion: read again at each poll, the rollout completes", async () => {
  const f = fleet();
  const stall = stallAfterCanary(f, 4);
  const waves = await rollout(f.options({ then: ['dc-b'] }));
  assert.equal(stall.failures(), 4);
  assert.deepEqual(waves.map((w) => [w.wave, w.hosts.length]), [['dc-a', 2], ['dc-b', 2]]);
  assert.deepEqual(versions(f), { 'dc-a-h1': 'v2', 'dc-a-h2': 'v2', 'dc-b-h1': 'v2', 'dc-b-h2': 'v2', 'dc-c-h1': 'v1', 'dc-c-h2': 'v1' });
  assert.deepEqual(
    f.events.filter((e) => e.event === 'etcd-unavailable').map((e) => e.wave),
    ['dc-b'],
    'the outage is told once, for the wave about to be promoted',
  );
});

test("etcd still unavailable a whole --timeout before the next wave's promotion: ETCD_UNAVAILABLE saying what was promoted and what was not", async () => {
  const f = fleet();
  stallAfterCanary(f, Infinity);
  await assert.rejects(
    rollout(f.options({ timeoutMs: 5000, then: ['dc-b'], rest: true })),
    (err: FanoutError) => err.code === 'ETCD_UNAVAILABLE' && /before promoting dc-b; dc-a promoted, dc-b and later waves were not/.test(err.message),
  );
  assert.equal(f.channels['prod@dc-b'], undefined);
  assert.equal(f.channels.prod!.record.version, 'v1');
});

test('etcd unavailable before the canary is promoted fails at once: nothing is promoted, nothing to wait for', async () => {
  const f = fleet();
  let calls = 0;
  f.registry.listAgents = async () => {
    calls++;
    throw new FanoutError('ETCD_UNAVAILABLE', 'etcd unavailable: cannot list agents');
  };
  await assert.rejects(rollout(f.options({ then: ['dc-b'] })), (err: FanoutError) => err.code === 'ETCD_UNAVAILABLE');
  assert.equal(calls, 1);
  assert.equal(f.channels['prod@dc-a'], undefined);
});

test("etcd unavailable at the next wave's promotion: promoted at a later poll; a first try etcd applied without answering still reports what it replaced", async () => {
  for (const appliedFirst of [false, true]) {
    const f = fleet();
    const promote = f.registry.promote;
    let failures = 0;
    f.registry.promote = async (...args: Parameters<typeof promote>) => {
      if (args[1] === 'prod@dc-b' && failures < 3) {
        failures++;
        if (appliedFirst && failures === 1) await promote(...args); // etcd took it; the answer was lost
        throw new FanoutError('ETCD_UNAVAILABLE', 'etcd unavailable: cannot move channel prod@dc-b');
      }
      return promote(...args);
    };
    const waves = await rollout(f.options({ then: ['dc-b'] }));
    assert.equal(failures, 3);
    // The scoped channels are new: they replaced none (and start with prod's history).
    assert.deepEqual(waves.map((w) => [w.wave, w.previous, w.hosts.length]), [['dc-a', null, 2], ['dc-b', null, 2]], `applied first: ${appliedFirst}`);
    assert.deepEqual(f.channels['prod@dc-b']!.record.history, ['v1']);
    assert.equal(f.events.filter((e) => e.event === 'etcd-unavailable').length, 1);
  }
});

test('the --rest wave promoted again after a lost answer reports the version prod was at, not its own', async () => {
  const f = fleet();
  const promote = f.registry.promote;
  let failures = 0;
  f.registry.promote = async (...args: Parameters<typeof promote>) => {
    if (args[1] === 'prod' && failures++ === 0) {
      await promote(...args); // applied, answer lost
      throw new FanoutError('ETCD_UNAVAILABLE', 'etcd unavailable: cannot move channel prod');
    }
    return promote(...args);
  };
  const waves = await rollout(f.options({ rest: true }));
  assert.deepEqual(waves.map((w) => [w.wave, w.previous]), [['dc-a', null], ['rest', 'v1']]);
  assert.deepEqual(f.channels.prod!.record.history, ['v1']);
});

test('a wave does not pass when one of its hosts drops out (its agent killed while staging): it times out naming the host', async () => {
  const f = fleet();
  const listAgents = f.registry.listAgents;
  let calls = 0;
  // dc-a-h2 is there when the canary is snapshotted, then its record is gone (lease run out).
  f.registry.listAgents = async () => (++calls <= 2 ? listAgents() : (await listAgents()).filter((a) => a.host !== 'dc-a-h2'));
  await assert.rejects(
    rollout(f.options({ timeoutMs: 5000, rest: true })),
    (err: FanoutError) => err.code === 'ROLLOUT_TIMEOUT' && /1 of 2 host\(s\) of dc-a/.test(err.message) && /dropped out: dc-a-h2/.test(err.message),
  );
  assert.equal(f.channels.prod!.record.version, 'v1', 'the rest was not promoted');

  // The host back (its agent restarted) and switched: the wave passes.
  const back = fleet();
  let polls = 0;
  back.registry.listAgents = async () => {
    const all = back.agents.map((a) => ({ ...a }));
    return ++polls <= 2 || polls > 4 ? all : all.filter((a) => a.host !== 'dc-a-h2');
  };
  const waves = await rollout(back.options({ rest: true }));
  assert.deepEqual(waves.map((w) => w.wave), ['dc-a', 'rest']);
});

test("etcd out of space at the next wave's promotion: ETCD_FULL at once (no waiting out --timeout), saying what was promoted and what was not", async () => {
  const f = fleet();
  const promote = f.registry.promote;
  let refusals = 0;
  f.registry.promote = async (...args: Parameters<typeof promote>) => {
    if (args[1] !== 'prod@dc-b') return promote(...args);
    refusals++;
    throw new FanoutError('ETCD_FULL', 'etcd (127.0.0.1:2379) is out of space and refuses writes (…): cannot move channel prod@dc-b. Free space and disarm the alarm: …');
  };
  const started = f.time;
  await assert.rejects(
    rollout(f.options({ timeoutMs: 600_000, then: ['dc-b'], rest: true })),
    (err: FanoutError) => err.code === 'ETCD_FULL' && /cannot move channel prod@dc-b\. .*\(dc-a promoted, dc-b and later waves were not\)$/.test(err.message),
  );
  assert.equal(refusals, 1, 'not tried again at each poll');
  assert.ok(f.time - started < 600_000, 'did not wait out the timeout');
  assert.equal(f.channels['prod@dc-b'], undefined);
  assert.equal(f.channels.prod!.record.version, 'v1');
});
