import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutError } from '../../core/errors.js';
import { parseWorkerConfig } from '../config/index.js';
import {
  AccessGate,
  ClientCredentials,
  PEER_HEADER,
  PeerCredential,
  TokenTable,
  authFromEnvironment,
  bearerToken,
  constantTimeEqual,
  endpointKey,
  publishToken,
  publishedTokenFor,
  unpublishToken,
  writeDataDirToken,
} from './index.js';

const ADMIN = 'admin-token-aaaaaaaaaaaa';
const READ = 'read-token-bbbbbbbbbbbbb';
const SECRET = 'cluster-secret-cccccccccc';

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof FanoutError);
    return err.code;
  }
  return 'allowed';
}

describe('constant-time comparison and the token table', () => {
  test('equal strings compare equal, any difference (content or length) does not', () => {
    assert.equal(constantTimeEqual('abcdef', 'abcdef'), true);
    assert.equal(constantTimeEqual('abcdef', 'abcdeg'), false);
    assert.equal(constantTimeEqual('abcdef', 'abcdefg'), false);
    assert.equal(constantTimeEqual('', 'a'), false);
  });

  test('a token has the role it was listed with; unknown tokens have none', () => {
    const table = new TokenTable([
      { token: ADMIN, role: 'admin' },
      { token: READ, role: 'read' },
    ]);
    assert.equal(table.roleOf(ADMIN), 'admin');
    assert.equal(table.roleOf(READ), 'read');
    assert.equal(table.roleOf(READ + 'x'), undefined);
    assert.equal(table.roleOf(''), undefined);
    assert.equal(table.hasAdmin, true);
    assert.equal(new TokenTable([{ token: READ, role: 'read' }]).hasAdmin, false);
  });

  test('a token listed with two roles is a configuration error, whatever the order; listed twice with one role it keeps it', () => {
    // Before: the stronger role won, so a read token listed again as admin silently became one.
    for (const tokens of [
      [{ token: ADMIN, role: 'admin' as const }, { token: ADMIN, role: 'read' as const }],
      [{ token: READ, role: 'read' as const }, { token: ADMIN, role: 'admin' as const }, { token: READ, role: 'admin' as const }],
    ]) {
      assert.throws(() => new TokenTable(tokens), (err: unknown) => err instanceof FanoutError && err.code === 'INVALID_CONFIG' && /auth\.tokens\.\d and auth\.tokens\.\d .*two roles \((read and admin|admin and read)\)/.test(err.message));
    }
    assert.equal(new TokenTable([{ token: READ, role: 'read' }, { token: READ, role: 'read' }]).roleOf(READ), 'read');
    assert.equal(new TokenTable([{ token: ADMIN, role: 'admin' }, { token: ADMIN, role: 'admin' }]).roleOf(ADMIN), 'admin');
  });

  test('only a Bearer authorization header yields a token', () => {
    assert.equal(bearerToken(`Bearer ${ADMIN}`), ADMIN);
    assert.equal(bearerToken(`bearer  ${ADMIN} `), ADMIN);
    assert.equal(bearerToken(`Basic ${ADMIN}`), undefined);
    assert.equal(bearerToken('Bearer'), undefined);
    assert.equal(bearerToken(undefined), undefined);
  });
});

describe('the access gate', () => {
  const tokens = [
    { token: ADMIN, role: 'admin' as const },
    { token: READ, role: 'read' as const },
  ];
  const auth = (token: string) => ({ authorization: `Bearer ${token}` });
  const peer = new PeerCredential(SECRET).headers();

  test('admin calls need an admin token: none or unknown → UNAUTHENTICATED, read → FORBIDDEN', () => {
    const gate = new AccessGate({ tokens, readToken: false, clusterSecret: SECRET });
    assert.equal(refusal(() => gate.check({}, 'admin')), 'UNAUTHENTICATED');
    assert.equal(refusal(() => gate.check(auth('not-a-known-token-zzzz'), 'admin')), 'UNAUTHENTICATED');
    assert.equal(refusal(() => gate.check(auth(READ), 'admin')), 'FORBIDDEN');
    assert.equal(refusal(() => gate.check(auth(ADMIN), 'admin')), 'allowed');
    // A peer is trusted for reads, not for admin calls.
    assert.equal(refusal(() => gate.check(peer, 'admin')), 'UNAUTHENTICATED');
  });

  test('data reads are open unless readToken is set; then a read or admin token (or a peer) is needed', () => {
    assert.throws(() => new AccessGate({ tokens, readToken: true }), { code: 'INVALID_CONFIG' }, 'closed reads without a secret would refuse the workers themselves');
    const open = new AccessGate({ tokens, readToken: false });
    assert.equal(refusal(() => open.check({}, 'read')), 'allowed');
    const closed = new AccessGate({ tokens, readToken: true, clusterSecret: SECRET });
    assert.equal(refusal(() => closed.check({}, 'read')), 'UNAUTHENTICATED');
    assert.equal(refusal(() => closed.check(auth('not-a-known-token-zzzz'), 'read')), 'UNAUTHENTICATED');
    assert.equal(refusal(() => closed.check(auth(READ), 'read')), 'allowed');
    assert.equal(refusal(() => closed.check(auth(ADMIN), 'read')), 'allowed');
    assert.equal(refusal(() => closed.check(peer, 'read')), 'allowed');
    assert.equal(refusal(() => closed.check({}, 'open')), 'allowed');
  });

  test('peer-only headers need the peer credential: refused from clients, even admin ones', () => {
    const gate = new AccessGate({ tokens, readToken: false, clusterSecret: SECRET });
    assert.equal(refusal(() => gate.check({ 'x-fanout-direct': '1' }, 'read')), 'FORBIDDEN');
    assert.equal(refusal(() => gate.check({ 'x-fanout-direct': '1', ...auth(ADMIN) }, 'read')), 'FORBIDDEN');
    assert.equal(refusal(() => gate.check({ 'x-fanout-direct': '1', [PEER_HEADER]: 'forged' }, 'read')), 'FORBIDDEN');
    assert.equal(refusal(() => gate.check({ [PEER_HEADER]: new PeerCredential('another-secret-ddddddddd').headers()[PEER_HEADER] }, 'read')), 'FORBIDDEN');
    assert.deepEqual(gate.check({ 'x-fanout-direct': '1', ...peer }, 'read'), { peer: true });
    assert.deepEqual(gate.peerHeaders(), peer);
  });

  test('without a cluster secret, peer-only headers are refused from everyone and none are sent', () => {
    const gate = new AccessGate({ tokens, readToken: false });
    assert.equal(refusal(() => gate.check({ 'x-fanout-direct': '1', ...peer }, 'read')), 'FORBIDDEN');
    assert.deepEqual(gate.peerHeaders(), {});
    assert.equal(gate.peer, undefined);
  });

  test('the peer credential does not contain the secret', () => {
    const value = new PeerCredential(SECRET).headers()[PEER_HEADER]!;
    assert.ok(!value.includes(SECRET));
    assert.ok(new PeerCredential(SECRET).verify(value));
  });
});

describe("a daemon's environment", () => {
  test('FANOUT_TOKEN becomes an admin token and FANOUT_CLUSTER_SECRET the secret the config lacks', () => {
    const auth = authFromEnvironment({ tokens: [{ token: READ, role: 'read' }], readToken: true }, { FANOUT_TOKEN: ADMIN, FANOUT_CLUSTER_SECRET: SECRET });
    assert.deepEqual(auth.tokens, [{ token: READ, role: 'read' }, { token: ADMIN, role: 'admin' }]);
    assert.equal(auth.clusterSecret, SECRET);
    assert.equal(auth.readToken, true);
    const configured = authFromEnvironment({ tokens: [], readToken: false, clusterSecret: 'from-the-config-eeeeeeee' }, { FANOUT_CLUSTER_SECRET: SECRET });
    assert.equal(configured.clusterSecret, 'from-the-config-eeeeeeee');
  });

  test('FANOUT_TOKEN that is a configured read token is a configuration error naming both, not a silent admin token', () => {
    // Someone exporting their read token as FANOUT_TOKEN for the CLI on a host that also runs a
    // worker made it an admin token there (a token listed twice took its stronger role).
    assert.throws(
      () => authFromEnvironment({ tokens: [{ token: ADMIN, role: 'admin' }, { token: READ, role: 'read' }], readToken: false }, { FANOUT_TOKEN: READ }),
      (err: unknown) => err instanceof FanoutError && err.code === 'INVALID_CONFIG' && /FANOUT_TOKEN/.test(err.message) && /auth\.tokens\.1/.test(err.message) && /read/.test(err.message),
    );
    // The same token as a configured admin token is no conflict: one role, listed once.
    assert.deepEqual(authFromEnvironment({ tokens: [{ token: ADMIN, role: 'admin' }], readToken: false }, { FANOUT_TOKEN: ADMIN }).tokens, [{ token: ADMIN, role: 'admin' }]);
  });

  test('a short FANOUT_TOKEN or secret is a configuration error, not a weak door', () => {
    assert.throws(() => authFromEnvironment({ tokens: [], readToken: false }, { FANOUT_TOKEN: 'short' }), { code: 'INVALID_CONFIG' });
    assert.throws(() => authFromEnvironment({ tokens: [], readToken: false }, { FANOUT_CLUSTER_SECRET: 'short' }), { code: 'INVALID_CONFIG' });
  });

  test('a token with a space or a control character is a configuration error (it could never authenticate)', () => {
    assert.throws(() => authFromEnvironment({ tokens: [], readToken: false }, { FANOUT_TOKEN: 'spaced token 0123456789' }), { code: 'INVALID_CONFIG' });
    assert.throws(() => parseWorkerConfig({ id: 'w', auth: { tokens: [{ token: 'spaced token 0123456789', role: 'admin' }] } }), /printable ASCII without spaces/);
    assert.throws(() => parseWorkerConfig({ id: 'w', auth: { tokens: [{ token: 'tab\ttoken0123456789', role: 'read' }] } }), /printable ASCII without spaces/);
    assert.equal(parseWorkerConfig({ id: 'w', auth: { tokens: [{ token: 'Aa0-._~+/=!#$%&*^|0123', role: 'read' }] } }).auth.tokens.length, 1);
  });
});

describe("serve's published token", () => {
  test('loopback addresses share one key; other hosts are keyed by name and port', () => {
    assert.equal(endpointKey('http://127.0.0.1:7450'), 'loopback_7450');
    assert.equal(endpointKey('http://localhost:7450/'), 'loopback_7450');
    assert.equal(endpointKey('http://[::1]:7450'), 'loopback_7450');
    assert.equal(endpointKey('http://0.0.0.0:7450'), 'loopback_7450');
    assert.equal(endpointKey('http://Cache-1.example:7450'), 'cache-1.example_7450');
    assert.equal(endpointKey('https://cache-1.example'), 'cache-1.example_443');
  });

  test("is readable by its user only, found for any loopback spelling, and not for another port or host", async () => {
    const home = await mkdtemp(join(tmpdir(), 'fanout-auth-'));
    const env = { XDG_CONFIG_HOME: join(home, 'config') };
    try {
      const files = await publishToken(['http://127.0.0.1:7450', 'http://127.0.0.1:7450'], ADMIN, env);
      await writeDataDirToken(home, ADMIN);
      assert.equal(files.length, 1);
      assert.equal((await stat(files[0]!)).mode & 0o777, 0o600);
      assert.equal((await stat(join(home, 'config', 'fanout', 'tokens'))).mode & 0o777, 0o700);
      assert.equal((await readFile(join(home, 'admin.token'), 'utf8')).trim(), ADMIN);
      assert.equal((await stat(join(home, 'admin.token'))).mode & 0o777, 0o600);
      assert.equal(publishedTokenFor('http://localhost:7450', env), ADMIN);
      assert.equal(publishedTokenFor('http://127.0.0.1:7451', env), undefined);
      assert.equal(publishedTokenFor('http://cache-1.example:7450', env), undefined);
      await unpublishToken(files, 'a-newer-token-ffffffffff');
      assert.equal(publishedTokenFor('http://localhost:7450', env), ADMIN, 'a file holding another token is left alone');
      await unpublishToken(files, ADMIN);
      assert.equal(publishedTokenFor('http://localhost:7450', env), undefined);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  test('a token left by a process that is gone (a killed serve) is ignored', async () => {
    const home = await mkdtemp(join(tmpdir(), 'fanout-auth-'));
    const env = { XDG_CONFIG_HOME: home };
    try {
      const child = spawn(process.execPath, ['-e', '0']);
      const pid = child.pid!;
      await new Promise((r) => child.once('exit', r));
      const files = await publishToken(['http://127.0.0.1:7452'], ADMIN, env);
      assert.equal(publishedTokenFor('http://127.0.0.1:7452', env), ADMIN);
      await writeFile(files[0]!, JSON.stringify({ token: ADMIN, pid }));
      assert.equal(publishedTokenFor('http://127.0.0.1:7452', env), undefined);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  test("the temp files a serve killed mid-write left (a dead token) go at the next start's write; a fresh one, another serve's write in flight, stays", async () => {
    const home = await mkdtemp(join(tmpdir(), 'fanout-auth-'));
    const env = { XDG_CONFIG_HOME: home };
    try {
      const tokens = join(home, 'fanout', 'tokens');
      await mkdir(tokens, { recursive: true });
      const old = new Date(Date.now() - 5 * 60_000);
      for (const file of [join(home, 'admin.token.4242.0123456789ab.tmp'), join(tokens, 'loopback_7453.4242.0123456789ab.tmp')]) {
        await writeFile(file, 'a-dead-token');
        await utimes(file, old, old);
      }
      await writeFile(join(home, 'admin.token.4343.ba9876543210.tmp'), 'being written');
      await writeFile(join(home, 'notes.tmp'), 'not ours');
      await writeDataDirToken(home, ADMIN);
      await publishToken(['http://127.0.0.1:7453'], ADMIN, env);
      assert.deepEqual((await readdir(home)).sort(), ['admin.token', 'admin.token.4343.ba9876543210.tmp', 'fanout', 'notes.tmp']);
      assert.deepEqual(await readdir(tokens), ['loopback_7453']);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  test('a client sends its configured token everywhere, and none when it has none', () => {
    assert.deepEqual(new ClientCredentials(ADMIN).headersFor('http://cache-9.example:1'), { authorization: `Bearer ${ADMIN}` });
    assert.deepEqual(new ClientCredentials(undefined).headersFor('http://cache-9.example:1'), {});
  });
});
