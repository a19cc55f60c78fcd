import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import { parseWorkerConfig } from '../lib/config/index.js';
import { DEV_CREDENTIALS, gatewayBanner, setupGateway } from './gateway.js';

function withEnv<T>(env: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(env)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  return fn().finally(() => {
    for (const [k, v] of Object.entries(saved)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  });
}

const NO_KEYS = { FANOUT_S3_ACCESS_KEY: undefined, FANOUT_S3_SECRET_KEY: undefined };

describe('gateway configuration and CLI defaults', () => {
  test('config: off by default, defaults filled in, credentials required when on', () => {
    const off = parseWorkerConfig({ mounts: { data: '/tmp' } });
    assert.deepEqual(off.gateway, { region: 'us-east-1', credentials: [], anonymous: false });
    assert.throws(() => parseWorkerConfig({ gateway: { listen: '127.0.0.1:0' } }), (e: FanoutError) => e.code === 'INVALID_CONFIG' && /credentials/.test(e.message));
    assert.equal(parseWorkerConfig({ gateway: { listen: '127.0.0.1:0', anonymous: true } }).gateway.anonymous, true);
    assert.throws(() => parseWorkerConfig({ gateway: { listen: 'x', credentials: [{ accessKeyId: 'a' }] } }), FanoutError);
    assert.throws(() => parseWorkerConfig({ gateway: { bogus: 1 } }), FanoutError);
  });

  test('serve: on with development keys (printed), or the environment keys; --s3-listen off', async () => {
    await withEnv(NO_KEYS, async () => {
      const config = parseWorkerConfig({ mounts: { data: '/tmp' } });
      const setup = await setupGateway(config, { s3Listen: '127.0.0.1:0' }, true);
      assert.equal(config.gateway.listen, '127.0.0.1:0');
      assert.deepEqual(config.gateway.credentials, [DEV_CREDENTIALS]);
      assert.ok(setup.devKeys);
      const banner = gatewayBanner(config, 'http://127.0.0.1:7451', setup);
      assert.match(banner, /S3 gateway on http:\/\/127\.0\.0\.1:7451/);
      assert.ok(banner.includes(DEV_CREDENTIALS.accessKeyId) && banner.includes(DEV_CREDENTIALS.secretAccessKey));
      const off = parseWorkerConfig({ mounts: { data: '/tmp' } });
      await setupGateway(off, { s3Listen: 'off' }, true);
      assert.equal(off.gateway.listen, undefined);
      assert.equal(gatewayBanner(off, undefined, { devKeys: false }), '');
    });
    await withEnv({ FANOUT_S3_ACCESS_KEY: 'MYKEY', FANOUT_S3_SECRET_KEY: 'my-secret' }, async () => {
      const config = parseWorkerConfig({ mounts: { data: '/tmp' } });
      const setup = await setupGateway(config, { s3Listen: '127.0.0.1:0', s3Anonymous: true }, true);
      assert.deepEqual(config.gateway.credentials, [{ accessKeyId: 'MYKEY', secretAccessKey: 'my-secret' }]);
      assert.equal(config.gateway.anonymous, true);
      const banner = gatewayBanner(config, 'http://127.0.0.1:1', setup);
      assert.match(banner, /MYKEY/);
      assert.doesNotMatch(banner, /my-secret/, 'secrets from the environment are not printed');
    });
    await withEnv({ FANOUT_S3_ACCESS_KEY: 'ONLYKEY', FANOUT_S3_SECRET_KEY: undefined }, async () => {
      await assert.rejects(setupGateway(parseWorkerConfig({}), {}, true), (e: FanoutError) => e.code === 'INVALID_CONFIG');
    });
    // As in the config: an id with "/" or ":" could never authenticate.
    await withEnv({ FANOUT_S3_ACCESS_KEY: 'MY/KEY', FANOUT_S3_SECRET_KEY: 'my-secret' }, async () => {
      await assert.rejects(setupGateway(parseWorkerConfig({}), {}, true), (e: FanoutError) => e.code === 'INVALID_CONFIG' && /FANOUT_S3_ACCESS_KEY/.test(e.message));
    });
  });

  test('worker: only when configured or asked for, and never without keys', async () => {
    await withEnv(NO_KEYS, async () => {
      const config = parseWorkerConfig({ mounts: { data: '/tmp' } });
      await setupGateway(config, {}, false);
      assert.equal(config.gateway.listen, undefined);
      await assert.rejects(setupGateway(parseWorkerConfig({}), { s3Listen: '127.0.0.1:0' }, false), (e: FanoutError) => e.code === 'INVALID_CONFIG');
      await assert.rejects(setupGateway(parseWorkerConfig({}), { s3Listen: 'nonsense' }, false), (e: FanoutError) => e.code === 'INVALID_CONFIG');
    });
  });
});
