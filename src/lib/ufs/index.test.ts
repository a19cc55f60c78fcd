import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { isFanoutError } from '../../core/errors.js';
import { HttpUfs, LocalUfs, S3Ufs, openUfs } from './index.js';

describe('openUfs', () => {
  test('plain paths and file:// URIs open a local directory', () => {
    const rel = openUfs('some/dir');
    assert.ok(rel instanceof LocalUfs);
    assert.equal(rel.rootDir, resolve('some/dir'));
    const abs = openUfs('file:///srv/models');
    assert.ok(abs instanceof LocalUfs);
    assert.equal(abs.rootDir, '/srv/models');
    assert.equal((openUfs('file:///srv/with%20space') as LocalUfs).rootDir, '/srv/with space');
  });

  test('s3:// opens a bucket with an optional prefix', async () => {
    const opts = { endpoint: 'http://127.0.0.1:1', accessKeyId: 'a', secretAccessKey: 'b' };
    const bare = openUfs('s3://bucket', opts);
    assert.ok(bare instanceof S3Ufs);
    assert.equal(bare.bucket, 'bucket');
    const withPrefix = openUfs('s3://my.bucket/models/v1/', opts);
    assert.ok(withPrefix instanceof S3Ufs);
    await bare.close?.();
    await withPrefix.close?.();
  });

  test('http(s):// opens a URL prefix', () => {
    const ufs = openUfs('https://example.com/models');
    assert.ok(ufs instanceof HttpUfs);
    assert.equal(ufs.baseUrl.href, 'https://example.com/models/');
  });

  test('bad URIs are INVALID_CONFIG', () => {
    for (const uri of ['', '   ', 'ftp://host/x', 's3://', 's3:///prefix', 's3://b/../x', 'file://remotehost/x', 'http://']) {
      assert.throws(() => openUfs(uri), (err) => isFanoutError(err, 'INVALID_CONFIG'), uri);
    }
  });
});
