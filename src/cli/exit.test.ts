import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { EXIT_ADDON_PATH } from './exit.cjs';

const exitModule = fileURLToPath(new URL('./exit.cjs', import.meta.url));

/** Runs `script` (CommonJS) in a fresh node; its exit status, signal and output. */
function node(script: string) {
  return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
}

test('the exit watchdog ends a process whose main thread never returns, with the code it was armed with', () => {
  assert.ok(existsSync(EXIT_ADDON_PATH), 'native/exit is built (npm run build:native)');
  // The main thread blocks for ever, as it does inside a hung exit; only the watchdog can end it.
  const run = node(`require(${JSON.stringify(EXIT_ADDON_PATH)}).armExitWatchdog(50, 7);
    process.stdout.write('armed');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);`);
  assert.equal(run.signal, null, 'ended by the watchdog, not by the test runner');
  assert.equal(run.status, 7);
  assert.equal(run.stdout, 'armed');
});

test('exitProcess ends a healthy process as process.exit does: exit listeners run, its own code', () => {
  const run = node(`process.on('exit', (code) => process.stdout.write('exit ' + code));
    require(${JSON.stringify(exitModule)}).exitProcess(3);`);
  assert.equal(run.status, 3);
  assert.equal(run.stdout, 'exit 3');
});

test('the watchdog refuses arguments it cannot honour', () => {
  const run = node(`const addon = require(${JSON.stringify(EXIT_ADDON_PATH)});
    const codes = [[-1, 0], [10, 256], [10, -1], ['x', 0]].map(([ms, code]) => { try { addon.armExitWatchdog(ms, code); return 'armed'; } catch (err) { return err.code; } });
    process.stdout.write(codes.join(','));`);
  assert.equal(run.status, 0);
  assert.equal(run.stdout, 'FANOUT_EXIT_WATCHDOG,FANOUT_EXIT_WATCHDOG,FANOUT_EXIT_WATCHDOG,FANOUT_EXIT_WATCHDOG');
});
