import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';
import { parseWorkerConfig } from '../config/index.js';
import { createSecureContext, rootCertificates } from 'node:tls';
import { CertificateReloader, DEFERRED_EXTRA_CA, certificateHint, deferredRootsPem, deferredTrust, readCa, tlsConnectOptions } from './index.js';

const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

test('a CA is taken from a PEM file, PEM text or bytes; a missing or non-PEM file is INVALID_ARGUMENT naming it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-ca-'));
  try {
    await writeFile(join(dir, 'ca.pem'), PEM);
    await writeFile(join(dir, 'junk.txt'), 'hello');
    assert.equal(readCa(join(dir, 'ca.pem'))!.toString(), PEM);
    assert.equal(readCa(PEM)!.toString(), PEM);
    assert.equal(readCa(Buffer.from(PEM))!.toString(), PEM);
    assert.equal(readCa(undefined), undefined);
    assert.equal(readCa(''), undefined, 'an empty FANOUT_CA means the system store');
    for (const file of [join(dir, 'missing.pem'), join(dir, 'junk.txt')]) {
      assert.throws(() => readCa(file), (err: unknown) => err instanceof FanoutError && err.code === 'INVALID_ARGUMENT' && err.message.includes(file));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a deferred NODE_EXTRA_CA_CERTS: clients without a CA get one context with Node\'s roots and the file, built when asked; an explicit CA wins; unreadable is a warning', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-extra-ca-'));
  const slots = process as unknown as Record<symbol, unknown>;
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.message);
  process.on('warning', onWarning);
  const count = (pem: Buffer) => pem.toString('latin1').split('-----BEGIN CERTIFICATE-----').length - 1;
  try {
    assert.equal(deferredTrust(), undefined, 'nothing deferred: Node\'s default store');
    assert.equal(tlsConnectOptions(undefined), undefined);
    assert.equal(deferredRootsPem(), undefined);
    const file = join(dir, 'extra.pem');
    const extra = rootCertificates[0]!; // a real certificate: the context parses it
    slots[DEFERRED_EXTRA_CA] = file;
    const trust = deferredTrust()!;
    assert.ok(tlsConnectOptions(undefined), 'undici options get it too');
    await writeFile(file, extra); // written after the options were made: read at the first use
    const isContext = (c: unknown) => c instanceof createSecureContext().constructor;
    assert.ok(isContext(trust.secureContext));
    assert.equal(trust.secureContext, deferredTrust()!.secureContext, 'one context for every connection');
    const pem = deferredRootsPem()!;
    assert.ok(pem.toString('latin1').endsWith(extra), 'the file comes after the roots');
    assert.ok(pem.toString('latin1').startsWith(rootCertificates[0]!), 'Node\'s bundled roots first');
    assert.equal(count(pem), rootCertificates.length + 1);
    assert.deepEqual(tlsConnectOptions(Buffer.from('x')), { ca: Buffer.from('x') }, 'a CA of the caller\'s own replaces every root');
    assert.equal(warnings.length, 0);
    slots[DEFERRED_EXTRA_CA] = join(dir, 'missing.pem');
    assert.ok(isContext(deferredTrust()!.secureContext), 'Node\'s roots alone');
    assert.equal(count(deferredRootsPem()!), rootCertificates.length);
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(warnings.some((w) => w.includes('missing.pem')), 'a warning names the file');
  } finally {
    delete slots[DEFERRED_EXTRA_CA];
    process.off('warning', onWarning);
    await rm(dir, { recursive: true, force: true });
  }
});

test('certificate verification failures get a hint about --ca; other connection errors do not', () => {
  const tlsError = Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' });
  assert.match(certificateHint(tlsError), /--ca/);
  assert.match(certificateHint(Object.assign(new Error('fetch failed'), { cause: tlsError })), /--ca/, 'found in the cause chain');
  assert.equal(certificateHint(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), '');
  assert.equal(certificateHint(undefined), '');
});

test('with tls the worker advertises https://listen; etcd client certificates need both cert and key', () => {
  const plain = parseWorkerConfig({ listen: '127.0.0.1:7450' });
  assert.equal(plain.advertiseUrl, 'http://127.0.0.1:7450');
  const secure = parseWorkerConfig({ listen: '127.0.0.1:7450', tls: { cert: '/c.pem', key: '/k.pem' } });
  assert.equal(secure.advertiseUrl, 'https://127.0.0.1:7450');
  const etcd = (tls: object) => parseWorkerConfig({ membership: { etcd: { endpoints: ['https://127.0.0.1:2379'], tls } } });
  assert.equal(etcd({ ca: '/ca.pem', cert: '/c.pem', key: '/k.pem' }).membership.etcd!.tls!.cert, '/c.pem');
  assert.throws(() => etcd({ ca: '/ca.pem', cert: '/c.pem' }), /both cert and key/);
  assert.throws(() => parseWorkerConfig({ tls: { cert: '/c.pem' } }), /tls\.key/);
});

test('the reloader checks files only when its clock says so, and a missing pair is logged, never applied', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-reload-'));
  const clock = new ManualClock(0);
  const warnings: string[] = [];
  let applied = 0;
  const reloader = new CertificateReloader({
    files: { cert: join(dir, 'c.pem'), key: join(dir, 'k.pem') },
    apply: () => applied++,
    logger: { info: () => undefined, warn: (_obj, msg) => warnings.push(msg ?? '') },
    clock,
    intervalMs: 1000,
  });
  try {
    await reloader.start();
    await writeFile(join(dir, 'c.pem'), 'garbage');
    await clock.advance(999);
    assert.equal(warnings.length, 0, 'no check before the interval');
    await clock.advance(1);
    for (let i = 0; i < 50 && warnings.length === 0; i++) await new Promise((r) => setImmediate(r));
    assert.equal(warnings.length, 1);
    assert.equal(applied, 0);
    await clock.advance(1000);
    for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    assert.equal(warnings.length, 1, 'unchanged files are not tried (or logged) again');
  } finally {
    await reloader.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
