import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import { etcdConnection } from './registry.js';

test('release commands take etcd TLS from flags or FANOUT_ETCD_CA/CERT/KEY and the password only from the environment', () => {
  assert.deepEqual(etcdConnection({ etcd: 'http://a:2379,http://b:2379' }, {}), { endpoints: ['http://a:2379', 'http://b:2379'], tls: undefined, auth: undefined });
  const env = { FANOUT_ETCD: 'https://e:2379', FANOUT_ETCD_CA: '/ca.pem', FANOUT_ETCD_USER: 'root', FANOUT_ETCD_PASSWORD: 'pw' };
  assert.deepEqual(etcdConnection({}, env), {
    endpoints: ['https://e:2379'],
    tls: { ca: '/ca.pem', cert: undefined, key: undefined },
    auth: { username: 'root', password: 'pw' },
  });
  assert.deepEqual(etcdConnection({ etcdCa: '/other.pem', etcdCert: '/c.pem', etcdKey: '/k.pem' }, env).tls, { ca: '/other.pem', cert: '/c.pem', key: '/k.pem' });
  const invalid = (err: unknown) => err instanceof FanoutError && err.code === 'INVALID_ARGUMENT';
  assert.throws(() => etcdConnection({ etcdCert: '/c.pem' }, env), invalid, 'a certificate without its key');
  assert.throws(() => etcdConnection({ etcdCert: '/c.pem', etcdKey: '/k.pem' }, { FANOUT_ETCD: 'https://e:2379' }), invalid, 'a client certificate without a CA');
  assert.throws(() => etcdConnection({}, {}), invalid, 'no endpoints');
});
