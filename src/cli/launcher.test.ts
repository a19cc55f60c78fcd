import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { followLauncher } from './launcher.js';

const until = async (what: string, check: () => boolean) => {
  for (let i = 0; i < 500 && !check(); i++) await sleep(2);
  assert.ok(check(), what);
};

test('a daemon started by npm exec stops once when its launcher goes away', async () => {
  let parent = 100;
  let calls = 0;
  const stop = followLauncher(() => calls++, { env: { npm_command: 'exec' }, parentPid: () => parent, intervalMs: 1 });
  try {
    await sleep(10);
    assert.equal(calls, 0, 'the launcher is still there');
    parent = 1;
    await until('onGone called', () => calls === 1);
    parent = 2;
    await sleep(10);
    assert.equal(calls, 1, 'called once');
  } finally {
    stop();
  }
});

test('a daemon not started by npm exec keeps running when its parent changes (nohup, systemd)', async () => {
  let parent = 100;
  let calls = 0;
  const stop = followLauncher(() => calls++, { env: {}, parentPid: () => parent, intervalMs: 1 });
  parent = 1;
  await sleep(20);
  stop();
  assert.equal(calls, 0);
});

test('a launcher already gone when the daemon starts watching is noticed (it was killed during start-up)', async () => {
  let calls = 0;
  const stop = followLauncher(() => calls++, { env: { npm_command: 'exec' }, parentPid: () => 1, launcherPid: 4242, intervalMs: 1000 });
  await until('onGone called', () => calls === 1);
  stop();
});

