import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fanoutBin } from '../harness/workers.js';

const run = promisify(execFile);

/**
 * bin/fanout.js run as an executable starts as a shell script, which keeps NODE_EXTRA_CA_CERTS
 * from Node's start for the short commands. A `node` that prints what it was given stands in for
 * Node here; the TLS test reads over https with the variable for real (tls.test.ts).
 */
describe('the launcher keeps NODE_EXTRA_CA_CERTS from Node for short commands', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-launcher-'));
    await writeFile(
      join(dir, 'node'),
      '#!/bin/sh\nprintf "extra=%s\\ndeferred=%s\\n" "${NODE_EXTRA_CA_CERTS-unset}" "${FANOUT_NODE_EXTRA_CA_CERTS-unset}"\nfor a in "$@"; do printf "arg=%s\\n" "$a"; done\n',
    );
    await chmod(join(dir, 'node'), 0o755);
    const { NODE_OPTIONS: _options, NODE_EXTRA_CA_CERTS: _extra, FANOUT_NODE_EXTRA_CA_CERTS: _deferred, ...rest } = process.env;
    env = { ...rest, PATH: `${dir}:${process.env.PATH}` };
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const launch = async (args: string[], extra: NodeJS.ProcessEnv) => {
    const { stdout } = await run(fanoutBin, args, { env: { ...env, ...extra } });
    const lines = stdout.trim().split('\n');
    return {
      extra: lines[0]!.slice('extra='.length),
      deferred: lines[1]!.slice('deferred='.length),
      args: lines.slice(2).map((l) => l.slice('arg='.length)),
    };
  };

  test('cat, stat, ls, cp and sync: the variable moves to FANOUT_NODE_EXTRA_CA_CERTS; the arguments pass unchanged', async () => {
    for (const command of ['cat', 'stat', 'ls', 'cp', 'sync']) {
      const seen = await launch([command, '/data/a file', '--json'], { NODE_EXTRA_CA_CERTS: '/etc/my ca.pem' });
      assert.deepEqual(seen, { extra: 'unset', deferred: '/etc/my ca.pem', args: [fanoutBin, command, '/data/a file', '--json'] }, command);
    }
  });

  test('other commands, no variable, or a NODE_OPTIONS flag choosing the default store: Node gets the variable as it was', async () => {
    assert.deepEqual(await launch(['status', '--json'], { NODE_EXTRA_CA_CERTS: '/ca.pem' }), { extra: '/ca.pem', deferred: 'unset', args: [fanoutBin, 'status', '--json'] });
    assert.deepEqual(await launch(['worker'], { NODE_EXTRA_CA_CERTS: '/ca.pem' }), { extra: '/ca.pem', deferred: 'unset', args: [fanoutBin, 'worker'] });
    assert.deepEqual(await launch(['cat', '/data/f'], {}), { extra: 'unset', deferred: 'unset', args: [fanoutBin, 'cat', '/data/f'] });
    assert.deepEqual(await launch(['cat', '/data/f'], { NODE_EXTRA_CA_CERTS: '' }), { extra: '', deferred: 'unset', args: [fanoutBin, 'cat', '/data/f'] });
    for (const flag of ['--use-openssl-ca', '--use-bundled-ca', '--max-old-space-size=512 --use-system-ca']) {
      const seen = await launch(['cat', '/data/f'], { NODE_EXTRA_CA_CERTS: '/ca.pem', NODE_OPTIONS: flag });
      assert.deepEqual([seen.extra, seen.deferred], ['/ca.pem', 'unset'], flag);
    }
  });
});
