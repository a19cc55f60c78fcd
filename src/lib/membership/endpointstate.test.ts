import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MOST_COOL_DOWN_MS } from './endpoints.js';
import { EndpointStateFile, endpointStatePath, KEEP_PREFERRED_MS, MAX_SETS, SILENCES_KEPT_MS } from './endpointstate.js';
import { EndpointPreference, FIRST_COOL_DOWN_MS } from './endpoints.js';
import { ManualClock } from '../../core/clock.js';

const endpoints = ['http://a:2379', 'http://b:2379', 'http://c:2379'];
const NOW = 1_800_000_000_000;

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'fanout-endpointstate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a saved preference is loaded by the next process, by endpoint name whatever their order', (t) => {
  const path = join(tempDir(t), 'sub', 'etcd-endpoints.json');
  new EndpointStateFile(path, () => NOW).save(endpoints, { preferred: 1, coolUntil: [NOW + 30_000, 0, 0], silences: [2, 0, 0] });
  assert.deepEqual(new EndpointStateFile(path, () => NOW + 1000).load(endpoints), { preferred: 1, coolUntil: [NOW + 30_000, 0, 0], silences: [2, 0, 0] });
  assert.deepEqual(new EndpointStateFile(path, () => NOW + 1000).load(['http://C:2379/', 'http://b:2379', 'http://a:2379']), {
    preferred: 1,
    coolUntil: [0, 0, NOW + 30_000],
    silences: [0, 0, 2],
  });
  assert.equal(new EndpointStateFile(path, () => NOW).load(['http://a:2379', 'http://b:2379']), undefined, 'another set learned nothing');
  assert.deepEqual(readdirSync(join(path, '..')), ['etcd-endpoints.json'], 'no temp file left');
});

test('a corrupt, foreign-format or unreadable file is ignored, and the next save replaces it', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'etcd-endpoints.json');
  for (const text of ['{"format":1,"sets":{"http://a:2379', '{"format":99,"sets":{}}', 'null', '[]', '{"format":1,"sets":{"k":{"savedAt":"soon","cooling":3}}}']) {
    writeFileSync(path, text);
    assert.equal(new EndpointStateFile(path, () => NOW).load(endpoints), undefined, text);
  }
  new EndpointStateFile(path, () => NOW).save(endpoints, { preferred: 2, coolUntil: [0, 0, 0], silences: [0, 0, 0] });
  assert.equal(new EndpointStateFile(path, () => NOW).load(endpoints)?.preferred, 2);
  assert.equal(new EndpointStateFile(dir, () => NOW).load(endpoints), undefined, 'a directory in its place');
});

test("another user's file is not read (it could steer this user's requests)", { skip: process.getuid?.() !== 0 && 'chown needs root' }, (t) => {
  const path = join(tempDir(t), 'etcd-endpoints.json');
  new EndpointStateFile(path, () => NOW).save(endpoints, { preferred: 2, coolUntil: [0, 0, 0], silences: [0, 0, 0] });
  assert.equal(new EndpointStateFile(path, () => NOW).load(endpoints)?.preferred, 2);
  chownSync(path, 65534, 65534);
  assert.equal(new EndpointStateFile(path, () => NOW).load(endpoints), undefined);
});

test('an unwritable place costs nothing: save neither throws nor leaves a file', (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'plain-file'), '');
  const path = join(dir, 'plain-file', 'etcd-endpoints.json'); // ENOTDIR, as root too
  const state = new EndpointStateFile(path, () => NOW);
  assert.doesNotThrow(() => state.save(endpoints, { preferred: 1, coolUntil: [NOW + 30_000, 0, 0], silences: [1, 0, 0] }));
  assert.equal(state.load(endpoints), undefined);
  assert.equal(new EndpointStateFile(undefined).load(endpoints), undefined, 'off');
});

test('cool-downs ended SILENCES_KEPT_MS ago and sets saved more than a day ago are dropped; a cool-down ending far ahead ends MOST_COOL_DOWN_MS from now', (t) => {
  const path = join(tempDir(t), 'etcd-endpoints.json');
  const file = {
    format: 1,
    sets: {
      'http://a:2379,http://b:2379,http://c:2379': {
        preferred: 'http://b:2379',
        savedAt: NOW + 10 * KEEP_PREFERRED_MS, // a clock that went back: taken as now
        cooling: {
          'http://a:2379': { until: NOW - SILENCES_KEPT_MS, silences: 1 },
          'http://b:2379': { until: NOW - 1, silences: 2 }, // ended, its silences kept
          'http://c:2379': { until: NOW + 365 * 86_400_000, silences: 1e9 },
        },
      },
      'http://old:2379': { preferred: 'http://old:2379', savedAt: NOW - KEEP_PREFERRED_MS, cooling: {} },
    },
  };
  writeFileSync(path, JSON.stringify(file));
  const state = new EndpointStateFile(path, () => NOW);
  assert.deepEqual(state.load(endpoints), { preferred: 1, coolUntil: [0, NOW - 1, NOW + MOST_COOL_DOWN_MS], silences: [0, 2, 16] });
  assert.equal(state.load(['http://old:2379']), undefined);
  state.save(['http://d:2379'], { preferred: 0, coolUntil: [0], silences: [0] });
  const written = JSON.parse(readFileSync(path, 'utf8')) as { sets: Record<string, { cooling: object }> };
  assert.deepEqual(Object.keys(written.sets).sort(), ['http://a:2379,http://b:2379,http://c:2379', 'http://d:2379']);
  assert.deepEqual(Object.keys(written.sets['http://a:2379,http://b:2379,http://c:2379']!.cooling), ['http://b:2379', 'http://c:2379']);
});

test('two processes saving other sets keep both; past MAX_SETS the least recently saved go', (t) => {
  const path = join(tempDir(t), 'etcd-endpoints.json');
  const first = new EndpointStateFile(path, () => NOW);
  const second = new EndpointStateFile(path, () => NOW + 1);
  assert.equal(first.load(endpoints), undefined); // both read before either wrote
  assert.equal(second.load(['http://x:2379', 'http://y:2379']), undefined);
  first.save(endpoints, { preferred: 1, coolUntil: [NOW + 30_000, 0, 0], silences: [1, 0, 0] });
  second.save(['http://x:2379', 'http://y:2379'], { preferred: 1, coolUntil: [0, 0], silences: [0, 0] });
  assert.equal(new EndpointStateFile(path, () => NOW + 2).load(endpoints)?.preferred, 1);
  assert.equal(new EndpointStateFile(path, () => NOW + 2).load(['http://x:2379', 'http://y:2379'])?.preferred, 1);
  for (let i = 0; i < MAX_SETS; i++) new EndpointStateFile(path, () => NOW + 10 + i).save([`http://n${i}:2379`], { preferred: 0, coolUntil: [0], silences: [0] });
  const sets = Object.keys((JSON.parse(readFileSync(path, 'utf8')) as { sets: object }).sets);
  assert.equal(sets.length, MAX_SETS);
  assert.ok(!sets.includes('http://x:2379,http://y:2379') && sets.includes(`http://n${MAX_SETS - 1}:2379`));
});

test('where the file is: FANOUT_ETCD_STATE, else the XDG cache, else ~/.cache; off: nowhere', () => {
  assert.equal(endpointStatePath({ FANOUT_ETCD_STATE: '/x/state.json', XDG_CACHE_HOME: '/c' }), '/x/state.json');
  assert.equal(endpointStatePath({ FANOUT_ETCD_STATE: 'off' }), undefined);
  assert.equal(endpointStatePath({ XDG_CACHE_HOME: '/c' }), '/c/fanout/etcd-endpoints.json');
  assert.match(endpointStatePath({})!, /\/\.cache\/fanout\/etcd-endpoints\.json$/);
});

test("a temp file left by a process killed between its write and its rename is removed by the next save", (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'etcd-endpoints.json');
  const longAgo = new Date(Date.now() - 10 * 60_000);
  for (const name of ['etcd-endpoints.json.4242.tmp', 'other.json.4242.tmp']) {
    writeFileSync(join(dir, name), '{"format":1,"se');
    utimesSync(join(dir, name), longAgo, longAgo);
  }
  writeFileSync(join(dir, 'etcd-endpoints.json.4343.tmp'), '{"format":1,"sets":{}}');
  new EndpointStateFile(path, () => NOW).save(endpoints, { preferred: 1, coolUntil: [0, 0, 0], silences: [0, 0, 0] });
  assert.deepEqual(readdirSync(dir).sort(), ['etcd-endpoints.json', 'etcd-endpoints.json.4343.tmp', 'other.json.4242.tmp'], "the abandoned one went; another process's write in progress and other files stay");
  assert.equal(new EndpointStateFile(path, () => NOW).load(endpoints)?.preferred, 1);
});

test('a link planted at the temp name is replaced, never written through', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'etcd-endpoints.json');
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'precious');
  symlinkSync(victim, `${path}.${process.pid}.tmp`);
  new EndpointStateFile(path, () => NOW).save(endpoints, { preferred: 2, coolUntil: [0, 0, 0], silences: [0, 0, 0] });
  assert.equal(readFileSync(victim, 'utf8'), 'precious');
  assert.equal(new EndpointStateFile(path, () => NOW).load(endpoints)?.preferred, 2);
  assert.deepEqual(readdirSync(dir).sort(), ['etcd-endpoints.json', 'victim']);
});

test('a member still silent when a later command asks it cools down for longer, until its silences are SILENCES_KEPT_MS old', async (t) => {
  const path = join(tempDir(t), 'etcd-endpoints.json');
  const clock = new ManualClock(NOW);
  /** One command: a preference made from the file, saving into it as the shared ones do. */
  const command = () => {
    const file = new EndpointStateFile(path, () => clock.now());
    const preference: EndpointPreference = new EndpointPreference(endpoints, clock, { saved: file.load(endpoints), onChange: () => file.save(endpoints, preference.saved()) });
    return preference;
  };
  const coolDownOfA = (preference: EndpointPreference) => preference.saved().coolUntil[0]! - clock.now();
  const first = command();
  first.failed(0, true);
  assert.equal(coolDownOfA(first), FIRST_COOL_DOWN_MS);
  await clock.advance(FIRST_COOL_DOWN_MS + 1000); // the cool-down has ended
  const second = command();
  assert.ok(second.saved().coolUntil[0]! < clock.now(), "a's cool-down has ended");
  assert.equal(second.saved().silences[0], 1, 'its silence is remembered');
  second.failed(0, true);
  assert.equal(coolDownOfA(second), 2 * FIRST_COOL_DOWN_MS, 'silent again: cools down for twice as long');
  await clock.advance(2 * FIRST_COOL_DOWN_MS + SILENCES_KEPT_MS);
  const third = command();
  third.failed(0, true);
  assert.equal(coolDownOfA(third), FIRST_COOL_DOWN_MS, 'silences that old are forgotten');
  third.answered(0);
  await clock.advance(1000);
  const fourth = command();
  assert.deepEqual(fourth.saved().silences, [0, 0, 0], 'an answer clears the silences in the file too');
});
