import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isOwnRecord, machineFingerprint } from './machine.js';
import type { AgentState } from './registry.js';

const ID = '3d1219c7c4c5404aaa1f6d2a48adfda4';
const OTHER_ID = 'b7e0c5a9f41d4c2e8a6b3d9f0e1c2a4b';
const BOOT = '295edf75-f3d1-451e-8f3d-27f4abd5c081';

/** A machine whose files are `files` (absent ones fail to read, as readFile does). */
const machine = (files: Record<string, string>) =>
  machineFingerprint(async (file) => {
    if (!(file in files)) throw Object.assign(new Error(`ENOENT: ${file}`), { code: 'ENOENT' });
    return files[file]!;
  });

test('two machines that differ in machine-id differ, and one machine is the same at each reading', async () => {
  const a = await machine({ '/etc/machine-id': `${ID}\n`, '/proc/sys/kernel/random/boot_id': `${BOOT}\n` });
  assert.match(a!, /^[0-9a-f]{16}$/);
  assert.equal(await machine({ '/etc/machine-id': `${ID}\n`, '/proc/sys/kernel/random/boot_id': `${BOOT}\n` }), a);
  assert.notEqual(await machine({ '/etc/machine-id': `${OTHER_ID}\n`, '/proc/sys/kernel/random/boot_id': `${BOOT}\n` }), a);
  assert.ok(!a!.includes(ID.slice(0, 8)), 'the machine-id itself is not shown');
});

test('a VM cloned with its machine-id still differs by its boot id', async () => {
  const original = await machine({ '/etc/machine-id': ID, '/proc/sys/kernel/random/boot_id': BOOT });
  const clone = await machine({ '/etc/machine-id': ID, '/proc/sys/kernel/random/boot_id': '11111111-2222-3333-4444-555555555555' });
  assert.notEqual(clone, original);
});

test("no /etc/machine-id, or an empty or uninitialized one: D-Bus's machine-id is read instead", async () => {
  const viaDbus = await machine({ '/var/lib/dbus/machine-id': ID, '/proc/sys/kernel/random/boot_id': BOOT });
  assert.equal(await machine({ '/etc/machine-id': ID, '/proc/sys/kernel/random/boot_id': BOOT }), viaDbus);
  assert.equal(await machine({ '/etc/machine-id': '', '/var/lib/dbus/machine-id': ID, '/proc/sys/kernel/random/boot_id': BOOT }), viaDbus);
  assert.equal(await machine({ '/etc/machine-id': 'uninitialized\n', '/var/lib/dbus/machine-id': ID, '/proc/sys/kernel/random/boot_id': BOOT }), viaDbus);
});

test('a container without machine-id is told apart by the boot id alone; with nothing to read there is no machine', async () => {
  const container = await machine({ '/proc/sys/kernel/random/boot_id': BOOT });
  assert.match(container!, /^[0-9a-f]{16}$/);
  assert.notEqual(await machine({ '/proc/sys/kernel/random/boot_id': '11111111-2222-3333-4444-555555555555' }), container);
  assert.equal(await machine({}), undefined);
});

test("a record is the agent's own only for its directory on its machine; one without machine (an earlier version's) counts as its machine's", () => {
  const record = (dir: string, machine?: string) => ({ host: 'web1', dir, ...(machine ? { machine } : {}) }) as AgentState;
  assert.ok(isOwnRecord(record('/srv/a', 'm1'), record('/srv/a', 'm1')));
  assert.ok(!isOwnRecord(record('/srv/a', 'm2'), record('/srv/a', 'm1')), 'another machine');
  assert.ok(!isOwnRecord(record('/srv/b', 'm1'), record('/srv/a', 'm1')), 'another directory');
  assert.ok(isOwnRecord(record('/srv/a'), record('/srv/a', 'm1')), 'written before machines were recorded');
  assert.ok(!isOwnRecord(record('/srv/b'), record('/srv/a', 'm1')));
  assert.ok(isOwnRecord(record('/srv/a', 'm1'), record('/srv/a')), 'this machine has none to tell');
});
