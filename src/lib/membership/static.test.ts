import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StaticMembership } from './index.js';

test('static membership: sorted copies, never stale, duplicate ids rejected', async () => {
  const m = new StaticMembership([
    { id: 'b', url: 'http://b', capacity: 2 },
    { id: 'a', url: 'http://a', capacity: 1 },
  ]);
  await m.start();
  assert.equal(m.stale, false);
  assert.deepEqual(m.members().map((x) => x.id), ['a', 'b']);
  m.members()[0]!.url = 'http://changed';
  assert.equal(m.members()[0]!.url, 'http://a');
  await m.stop();
  assert.throws(
    () => new StaticMembership([{ id: 'a', url: 'http://a', capacity: 1 }, { id: 'a', url: 'http://x', capacity: 1 }]),
    { code: 'INVALID_CONFIG' },
  );
});
