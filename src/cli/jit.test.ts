import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDaemon, jitFlags, SHORT_COMMAND_INTERRUPT_BUDGET } from './jit.js';

const argv = (...args: string[]) => ['/usr/bin/node', '/opt/fanout/bin/fanout.js', ...args];

test('daemons keep V8 defaults; one-shot commands get the larger tiering budget', () => {
  for (const daemon of [argv('serve', './data'), argv('worker', '--config', 'w.yaml'), argv('mount', '/mnt/fanout'), argv('sync', 'app', '--channel', 'prod', '--dir', '/srv/app')]) {
    assert.equal(isDaemon(daemon), true, daemon.join(' '));
    assert.deepEqual(jitFlags(daemon), []);
  }
  for (const short of [argv('sync', 'app', '--channel', 'prod', '--dir', '/srv/app', '--once'), argv('cat', '/data/a'), argv('cp', '/data/', 'out'), argv('load', '--release', 'app@v1'), argv('release', 'status', 'app'), argv('--help'), argv()]) {
    assert.equal(isDaemon(short), false, short.join(' '));
    assert.deepEqual(jitFlags(short), [`--interrupt-budget=${SHORT_COMMAND_INTERRUPT_BUDGET}`]);
  }
});
