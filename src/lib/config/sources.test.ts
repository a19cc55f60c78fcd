import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mountSpec, parseWorkerConfig } from './index.js';

test('source deadlines default to 5s connect, 30s first byte, 30s idle, and accept durations', () => {
  const defaults = parseWorkerConfig({ id: 'w' });
  const { sourceConnect, sourceFirstByte, sourceIdle } = defaults.timeouts;
  assert.deepEqual({ sourceConnect, sourceFirstByte, sourceIdle }, { sourceConnect: 5000, sourceFirstByte: 30000, sourceIdle: 30000 });
  const set = parseWorkerConfig({ id: 'w', timeouts: { sourceFirstByte: '2s', sourceIdle: 750 } });
  assert.equal(set.timeouts.sourceFirstByte, 2000);
  assert.equal(set.timeouts.sourceIdle, 750);
  assert.equal(set.timeouts.sourceConnect, 5000);
});

test('a whole source listing is bounded by default (10 minutes, a million entries), and both bounds can be set', () => {
  const defaults = parseWorkerConfig({ id: 'w' });
  assert.equal(defaults.timeouts.sourceList, 600_000);
  assert.equal(defaults.limits.sourceListEntries, 1_000_000);
  const set = parseWorkerConfig({ id: 'w', timeouts: { sourceList: '30m' }, limits: { sourceListEntries: 5_000_000 } });
  assert.equal(set.timeouts.sourceList, 1_800_000);
  assert.equal(set.limits.sourceListEntries, 5_000_000);
  assert.throws(() => parseWorkerConfig({ id: 'w', limits: { sourceListEntries: 0 } }), /limits\.sourceListEntries/);
});

test('a mount may set versioning strict or weak; anything else is invalid config', () => {
  const config = parseWorkerConfig({ id: 'w', mounts: { web: { uri: 'http://127.0.0.1:1/', versioning: 'weak' }, plain: 'http://127.0.0.1:1/' } });
  assert.equal(mountSpec(config, 'web').versioning, 'weak');
  assert.equal(mountSpec(config, 'plain').versioning, undefined);
  assert.throws(() => parseWorkerConfig({ id: 'w', mounts: { web: { uri: 'http://x/', versioning: 'loose' } } }), /mounts\.web/);
});

test('a mount on a line must name a configured line, and cannot also have its own sourceRate', () => {
  const ok = parseWorkerConfig({ lines: { wan: { rate: '100MB/s' } }, mounts: { a: { uri: '/tmp', line: 'wan' }, b: { uri: '/tmp', line: 'wan' } } });
  assert.equal(ok.lines.wan!.rate, 100_000_000);
  assert.throws(() => parseWorkerConfig({ mounts: { a: { uri: '/tmp', line: 'nope' } } }), /no line named "nope"/);
  assert.throws(() => parseWorkerConfig({ lines: { wan: { rate: '1MB/s' } }, mounts: { a: { uri: '/tmp', line: 'wan', sourceRate: '1MB/s' } } }), /either a named line or its own sourceRate/);
  assert.throws(() => parseWorkerConfig({ lines: { wan: { rate: 0 } } }), /rate above 0/);
});
