import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { parseMountOptions } from '../mount/options.js';
import { hedgeOption } from './hedge.js';
import { main } from './main.js';

function parse(args: string[]): { hedge?: unknown } {
  const command = new Command('x').exitOverride().configureOutput({ writeErr: () => {} }).addOption(hedgeOption());
  command.parse(args, { from: 'user' });
  return command.opts();
}

test('--hedge takes auto (the default), off, or a delay', () => {
  assert.equal(parse([]).hedge, 'auto');
  assert.equal(parse(['--hedge', 'off']).hedge, 'off');
  assert.equal(parse(['--hedge', '0']).hedge, 'off');
  assert.equal(parse(['--hedge', '250']).hedge, 250);
  assert.equal(parse(['--hedge', '250ms']).hedge, 250);
  assert.equal(parse(['--hedge', '2s']).hedge, 2000);
  assert.equal(parse(['--hedge', 'auto']).hedge, 'auto');
});

test('a bad --hedge is a usage error before any request is sent', async () => {
  assert.throws(() => parse(['--hedge', 'soon']), (e: { code?: string }) => e.code === 'commander.invalidArgument');
  const saved = process.exitCode;
  const write = process.stderr.write;
  let stderr = '';
  process.stderr.write = ((chunk: string) => ((stderr += chunk), true)) as typeof process.stderr.write;
  try {
    // An endpoint nothing listens on: a request would fail with another code.
    await main(['node', 'fanout', 'cat', '/data/x', '--endpoint', 'http://127.0.0.1:9', '--hedge', 'soon']);
    assert.equal(process.exitCode, 2);
    assert.match(stderr, /invalid hedge "soon"/);
  } finally {
    process.stderr.write = write;
    process.exitCode = saved;
  }
});

test('the mount takes the same hedge option', () => {
  assert.equal(parseMountOptions({}).hedge, 'auto');
  assert.equal(parseMountOptions({ hedge: 'off' }).hedge, 'off');
  assert.equal(parseMountOptions({ hedge: '300ms' }).hedge, 300);
  assert.throws(() => parseMountOptions({ hedge: 'later' }), (e: { code?: string }) => e.code === 'INVALID_ARGUMENT');
});
