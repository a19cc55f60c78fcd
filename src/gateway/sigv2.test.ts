import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { Authenticator, type AuthRequest } from './auth.js';
import { S3Error } from './errors.js';
import { headerMap, parseQuery } from './sigv4.js';
import { botocoreBucketPaths, canonicalResource, signatureV2, stringToSignV2 } from './sigv2.js';

// The examples of https://docs.aws.amazon.com/AmazonS3/latest/userguide/RESTAuthentication.html
const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const DATE = 'Tue, 27 Mar 2007 19:36:42 +0000';
const T0 = Date.parse(DATE);

function request(method: string, url: string, headers: [string, string][], hostBucket?: string): AuthRequest {
  const q = url.indexOf('?');
  const rawPath = q === -1 ? url : url.slice(0, q);
  return { method, path: decodeURIComponent(rawPath), rawPath, hostBucket, query: parseQuery(q === -1 ? '' : url.slice(q + 1))!, headers: headerMap(headers.flat()) };
}

function authenticator(now = T0): Authenticator {
  return new Authenticator({ region: 'us-east-1', credentials: [{ accessKeyId: AKID, secretAccessKey: SECRET }], anonymous: false, clock: new ManualClock(now) });
}

function rejects(fn: () => unknown, code: string): S3Error {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof S3Error, `expected an S3Error, got ${err}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

describe('SigV2', () => {
  test('GET object example: string to sign and signature (virtual-hosted bucket)', () => {
    const toSign = stringToSignV2({
      method: 'GET',
      rawPath: '/photos/puppy.jpg',
      hostBucket: 'awsexamplebucket1',
      query: [],
      contentMd5: '',
      contentType: '',
      date: DATE,
      amzHeaders: new Map(),
    });
    assert.equal(toSign, `GET\n\n\n${DATE}\n/awsexamplebucket1/photos/puppy.jpg`);
    assert.equal(signatureV2(SECRET, toSign), 'qgk2+6Sv9/oM7G3qLEjTH1a1l1g=');
  });

  test('canonical resource keeps only signed sub-resources, sorted, values decoded', () => {
    assert.equal(canonicalResource({ rawPath: '/b/k%20ey', query: [['versionId', 'v 1'], ['acl', ''], ['prefix', 'x'], ['response-content-type', 'a/b']] }), '/b/k%20ey?acl&response-content-type=a/b&versionId=v 1');
  });

  test('botocore signs a bare bucket as "/data/" or its URI template; object keys and the root are signed as sent', () => {
    assert.deepEqual(botocoreBucketPaths('/data', [['list-type', '2']]), ['/data/']);
    assert.deepEqual(botocoreBucketPaths('/data', [['location', '']]), ['/data/', '/data?location']);
    assert.deepEqual(botocoreBucketPaths('/data/', []), []);
    assert.deepEqual(botocoreBucketPaths('/data/key', []), []);
    assert.deepEqual(botocoreBucketPaths('/', []), []);
    assert.equal(canonicalResource({ rawPath: '/data', signedPath: '/data/', query: [['location', '']] }), '/data/?location');
    assert.equal(canonicalResource({ rawPath: '/data', signedPath: '/data?location', query: [['location', '']] }), '/data?location?location');
  });

  test('a request on a bucket sent as "/data" is accepted signed as botocore signs it, header or presigned', () => {
    const date = new Date(T0).toUTCString();
    for (const [method, url, resource] of [
      ['HEAD', '/data', '/data/'],
      ['GET', '/data?location', '/data/?location'],
      ['GET', '/data?list-type=2', '/data/?list-type=2'],
      ['GET', '/data?list-type=2', '/data/'],
      ['GET', '/data?location', '/data?location'],
      ['GET', '/data?location', '/data?location?location'],
    ] as const) {
      const signature = signatureV2(SECRET, `${method}\n\n\n${date}\n${resource}`);
      const req = request(method, url, [['Date', date], ['Authorization', `AWS ${AKID}:${signature}`]]);
      assert.equal(authenticator().authenticate(req).accessKeyId, AKID, `${method} ${url} signed as ${resource}`);
    }
    const expires = Math.floor(T0 / 1000) + 300;
    const signature = signatureV2(SECRET, `GET\n\n\n${expires}\n/data/`);
    const presigned = request('GET', `/data?prefix=a&AWSAccessKeyId=${AKID}&Expires=${expires}&Signature=${encodeURIComponent(signature)}`, [['Host', 'localhost']]);
    assert.equal(authenticator().authenticate(presigned).accessKeyId, AKID);
    // An object's key is signed as sent: "/data/key/" is a different resource.
    const keySigned = signatureV2(SECRET, `GET\n\n\n${date}\n/data/key/`);
    rejects(() => authenticator().authenticate(request('GET', '/data/key', [['Date', date], ['Authorization', `AWS ${AKID}:${keySigned}`]])), 'SignatureDoesNotMatch');
  });

  test('accepts the example header, rejects a changed signature, secret, path or stale date', () => {
    const headers = (signature: string): [string, string][] => [['Host', 'awsexamplebucket1.us-west-1.s3.amazonaws.com'], ['Date', DATE], ['Authorization', `AWS ${AKID}:${signature}`]];
    const ok = authenticator().authenticate(request('GET', '/photos/puppy.jpg', headers('qgk2+6Sv9/oM7G3qLEjTH1a1l1g='), 'awsexamplebucket1'));
    assert.deepEqual(ok, { accessKeyId: AKID, presigned: false });
    rejects(() => authenticator().authenticate(request('GET', '/photos/puppy.jpg', headers('qgk2+6Sv9/oM7G3qLEjTH1a1l1h='), 'awsexamplebucket1')), 'SignatureDoesNotMatch');
    rejects(() => authenticator().authenticate(request('GET', '/photos/kitten.jpg', headers('qgk2+6Sv9/oM7G3qLEjTH1a1l1g='), 'awsexamplebucket1')), 'SignatureDoesNotMatch');
    rejects(() => authenticator(T0 + 16 * 60_000).authenticate(request('GET', '/photos/puppy.jpg', headers('qgk2+6Sv9/oM7G3qLEjTH1a1l1g='), 'awsexamplebucket1')), 'RequestTimeTooSkewed');
    const unknown: [string, string][] = headers('x').map(([k, v]) => [k, v.replace(AKID, 'NOBODY')]);
    rejects(() => authenticator().authenticate(request('GET', '/photos/puppy.jpg', unknown, 'awsexamplebucket1')), 'InvalidAccessKeyId');
  });

  test("ListObjectsV2 as botocore signs it: list-type among the sub-resources, or not", () => {
    const date = new Date(T0).toUTCString();
    for (const resource of ['/data?list-type=2', '/data']) {
      const signature = signatureV2(SECRET, `GET\n\n\n${date}\n${resource}`);
      const req = request('GET', '/data?list-type=2&prefix=tree%2F', [['Date', date], ['Authorization', `AWS ${AKID}:${signature}`]]);
      assert.equal(authenticator().authenticate(req).accessKeyId, AKID, resource);
    }
  });

  test('x-amz-date: the Date line is empty and the header is signed among the x-amz-* ones', () => {
    const amzDate = 'Tue, 27 Mar 2007 19:36:42 +0000';
    const toSign = `GET\n\n\n\nx-amz-date:${amzDate}\nx-amz-meta-a:1,2\n/bucket/key`;
    const signature = signatureV2(SECRET, toSign);
    const req = request('GET', '/bucket/key', [['x-amz-meta-a', '1'], ['X-Amz-Date', amzDate], ['x-amz-meta-a', '2'], ['Authorization', `AWS ${AKID}:${signature}`]]);
    assert.equal(authenticator().authenticate(req).accessKeyId, AKID);
  });

  test('presigned URL: valid until Expires, expired after, tampered rejected', () => {
    const expires = Math.floor(T0 / 1000) + 300;
    const signature = signatureV2(SECRET, `GET\n\n\n${expires}\n/data/big%20file.bin?response-content-type=text/plain`);
    const url = `/data/big%20file.bin?AWSAccessKeyId=${AKID}&Expires=${expires}&Signature=${encodeURIComponent(signature)}&response-content-type=text%2Fplain`;
    assert.deepEqual(authenticator().authenticate(request('GET', url, [['Host', 'localhost']])), { accessKeyId: AKID, presigned: true });
    rejects(() => authenticator(T0 + 301_000).authenticate(request('GET', url, [['Host', 'localhost']])), 'AccessDenied');
    rejects(() => authenticator().authenticate(request('GET', url.replace('big%20file', 'big%20fil3'), [['Host', 'localhost']])), 'SignatureDoesNotMatch');
    rejects(() => authenticator().authenticate(request('GET', url.replace(`Expires=${expires}`, `Expires=${expires + 1}`), [['Host', 'localhost']])), 'SignatureDoesNotMatch');
    rejects(() => authenticator().authenticate(request('GET', url.replace(`Expires=${expires}`, 'Expires=soon'), [['Host', 'localhost']])), 'AuthorizationQueryParametersError');
  });

  test('a presigned URL valid for more than a week (as SigV4 allows at most) is refused, however well signed', () => {
    const presigned = (seconds: number) => {
      const expires = Math.floor(T0 / 1000) + seconds;
      const signature = signatureV2(SECRET, `GET\n\n\n${expires}\n/data/a.bin`);
      return request('GET', `/data/a.bin?AWSAccessKeyId=${AKID}&Expires=${expires}&Signature=${encodeURIComponent(signature)}`, [['Host', 'localhost']]);
    };
    assert.equal(authenticator().authenticate(presigned(7 * 24 * 3600)).accessKeyId, AKID);
    rejects(() => authenticator().authenticate(presigned(8 * 24 * 3600)), 'AuthorizationQueryParametersError');
    rejects(() => authenticator().authenticate(presigned(99_999_999_999 - Math.floor(T0 / 1000))), 'AuthorizationQueryParametersError');
  });
});
