import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import { claimHost } from './hostclaim.js';
import type { AgentState } from './registry.js';

const state = (dir: string): AgentState => ({
  ...{ host: 'web1', channel: 'prod', following: 'prod', dir, current: null, target: null, phase: 'idle' },
  ...{ bytesDone: 0, bytesTotal: 0, bytesLocal: 0, bytesFetched: 0, error: null, updatedAt: '' },
});

/**
 * The host record as etcd holds it, on a manual clock: another agent's record of /srv/a, which
 * that agent rewrites every `rewriteMs` while alive, or which goes with its lease at `expiresAt`.
 */
function world(other: { rewriteMs?: number; expiresAt?: number; holder?: AgentState }) {
  let clock = 0;
  const written: AgentState[] = [];
  const registry = {
    async claimAgent(_name: string, mine: AgentState) {
      const gone = other.expiresAt !== undefined && clock >= other.expiresAt;
      if (gone) return written.push(mine), { claimed: true as const };
      const revision = other.rewriteMs ? Math.floor(clock / other.rewriteMs) : 0;
      return { claimed: false as const, holder: other.holder ?? state('/srv/a'), modRevision: String(100 + revision) };
    },
  };
  return {
    written,
    claim: (hostGiven = false, mine = state('/srv/b')) =>
      claimHost({ registry, name: 'app', state: mine, leaseTtlMs: 15_000, hostGiven, now: () => clock, sleep: async (ms) => void (clock += ms) }),
    elapsed: () => clock,
  };
}

test('a live agent of another directory under the same host id: HOST_IN_USE naming its directory and --host', async () => {
  const w = world({ rewriteMs: 5000 });
  await assert.rejects(w.claim(), (err: FanoutError) => {
    assert.equal(err.code, 'HOST_IN_USE');
    assert.match(err.message, /host id web1 \(the hostname: no --host given\) is reported by a live sync agent of \/srv\/a \(channel prod\)/);
    assert.match(err.message, /give the agent of \/srv\/b a host id of its own with --host \(e\.g\. --host web1-b\)/);
    return true;
  });
  assert.ok(w.elapsed() <= 6000, `told after ${w.elapsed()} ms: as soon as the record was rewritten`);
  assert.equal(w.written.length, 0, 'the other agent record is left alone');
});

test('the record of a dead agent of another directory is taken once its lease is over', async () => {
  const w = world({ expiresAt: 12_000 });
  await w.claim();
  assert.equal(w.written.length, 1);
  assert.equal(w.written[0]!.dir, '/srv/b');
  assert.ok(w.elapsed() >= 12_000 && w.elapsed() < 14_000, `${w.elapsed()} ms`);
});

test('a record that neither changes nor goes after its lease is kept alive by someone: HOST_IN_USE', async () => {
  const w = world({});
  await assert.rejects(w.claim(true), (err: FanoutError) => err.code === 'HOST_IN_USE' && err.message.startsWith('host id web1 (--host) is reported'));
  assert.ok(w.elapsed() >= 17_000, `${w.elapsed()} ms`);
});

test('a live agent of the same directory on another machine with the same host id: HOST_IN_USE naming another machine and --host', async () => {
  const w = world({ rewriteMs: 5000, holder: { ...state('/srv/a'), machine: '0a1b2c3d4e5f6789' } });
  await assert.rejects(w.claim(false, { ...state('/srv/a'), machine: 'f00dcafe12345678' }), (err: FanoutError) => {
    assert.equal(err.code, 'HOST_IN_USE');
    assert.match(err.message, /host id web1 \(the hostname: no --host given\) is reported by a live sync agent of \/srv\/a on another machine \(channel prod\)/);
    assert.match(err.message, /two machines share this host id: give the agent on this one a host id of its own with --host \(e\.g\. --host web1-f00dca\)/);
    return true;
  });
  assert.equal(w.written.length, 0);
});
