import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { Authenticator, type AuthRequest } from './auth.js';
import { S3Error } from './errors.js';
import {
  EMPTY_SHA256,
  canonicalQuery,
  canonicalRequest,
  formatAmzDate,
  headerMap,
  parseAmzDate,
  parseQuery,
  signatureHex,
  signaturesEqual,
  signingKey,
  stringToSign,
  uriEncode,
} from './sigv4.js';

// The examples of https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
// and sigv4-query-string-auth.html.
const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const HOST = 'examplebucket.s3.amazonaws.com';
const T0 = Date.UTC(2013, 4, 24, 0, 0, 0);
const SCOPE = `${AKID}/20130524/us-east-1/s3/aws4_request`;

function request(method: string, url: string, headers: [string, string][]): AuthRequest {
  const q = url.indexOf('?');
  return {
    method,
    path: decodeURIComponent(q === -1 ? url : url.slice(0, q)),
    query: parseQuery(q === -1 ? '' : url.slice(q + 1))!,
    headers: headerMap(headers.flat()),
  };
}

function authenticator(options: { anonymous?: boolean; now?: number } = {}): Authenticator {
  return new Authenticator({
    region: 'us-east-1',
    credentials: [{ accessKeyId: AKID, secretAccessKey: SECRET }],
    anonymous: options.anonymous ?? false,
    clock: new ManualClock(options.now ?? T0),
  });
}

function rejects(fn: () => unknown, code: string, status?: number): S3Error {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof S3Error, `expected an S3Error, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (status !== undefined) assert.equal(err.status, status);
    return err;
  }
  assert.fail(`expected ${code}`);
}

const getObjectHeaders = (signature: string): [string, string][] => [
  ['Host', HOST],
  ['Range', 'bytes=0-9'],
  ['x-amz-content-sha256', EMPTY_SHA256],
  ['x-amz-date', '20130524T000000Z'],
  ['Authorization', `AWS4-HMAC-SHA256 Credential=${SCOPE},SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=${signature}`],
];

describe('SigV4 building blocks (AWS documentation vectors)', () => {
  test('GET object: canonical request, string to sign and signature', () => {
    const req = request('GET', '/test.txt', getObjectHeaders('x'));
    const canonical = canonicalRequest({ ...req, signedHeaders: ['host', 'range', 'x-amz-content-sha256', 'x-amz-date'], payloadHash: EMPTY_SHA256 });
    assert.equal(
      canonical,
      `GET\n/test.txt\n\nhost:${HOST}\nrange:bytes=0-9\nx-amz-content-sha256:${EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\n` +
        `host;range;x-amz-content-sha256;x-amz-date\n${EMPTY_SHA256}`,
    );
    const toSign = stringToSign('20130524T000000Z', '20130524/us-east-1/s3/aws4_request', canonical);
    assert.equal(toSign.split('\n')[3], '7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972');
    const signature = signatureHex(signingKey(SECRET, '20130524', 'us-east-1', 's3'), toSign);
    assert.equal(signature, 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41');
  });

  test('URI encoding, query canonicalization, header values, dates', () => {
    assert.equal(uriEncode('a b/c~d_e.f-g*h(i)!+$', false), 'a%20b/c~d_e.f-g%2Ah%28i%29%21%2B%24');
    assert.equal(uriEncode('a/b', true), 'a%2Fb');
    assert.equal(uriEncode('é', true), '%C3%A9');
    assert.equal(canonicalQuery(parseQuery('prefix=J&max-keys=2')!), 'max-keys=2&prefix=J');
    assert.equal(canonicalQuery(parseQuery('lifecycle')!), 'lifecycle=');
    // "+" is a space, as S3 reads a query; a plus comes as %2B.
    assert.equal(canonicalQuery(parseQuery('b=2&a=%2B+x&a=1')!), 'a=%2B%20x&a=1&b=2');
    assert.deepEqual(parseQuery('prefix=a+b&x+y=%2B'), [['prefix', 'a b'], ['x y', '+']]);
    assert.equal(parseQuery('a=%zz'), undefined);
    assert.equal(parseAmzDate('20130524T000000Z'), T0);
    assert.ok(Number.isNaN(parseAmzDate('20130231T000000Z')));
    assert.ok(Number.isNaN(parseAmzDate('2013-05-24T00:00:00Z')));
    assert.equal(formatAmzDate(T0), '20130524T000000Z');
    assert.ok(signaturesEqual('abc', 'abc'));
    assert.ok(!signaturesEqual('abc', 'abd'));
    assert.ok(!signaturesEqual('abc', 'abcd'));
  });
});

describe('Authenticator', () => {
  test('accepts the GET object example and rejects a changed signature or secret', () => {
    const good = 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41';
    assert.deepEqual(authenticator().authenticate(request('GET', '/test.txt', getObjectHeaders(good))), { accessKeyId: AKID, presigned: false });
    const err = rejects(() => authenticator().authenticate(request('GET', '/test.txt', getObjectHeaders(good.replace(/^f/, 'e')))), 'SignatureDoesNotMatch', 403);
    assert.match(err.fields.CanonicalRequest!, /^GET\n\/test.txt\n/);
    const wrongSecret = new Authenticator({ region: 'us-east-1', credentials: [{ accessKeyId: AKID, secretAccessKey: 'nope' }], anonymous: false, clock: new ManualClock(T0) });
    rejects(() => wrongSecret.authenticate(request('GET', '/test.txt', getObjectHeaders(good))), 'SignatureDoesNotMatch', 403);
    // The signed Range header was altered in transit.
    const tampered = getObjectHeaders(good).map(([k, v]): [string, string] => (k === 'Range' ? [k, 'bytes=0-99'] : [k, v]));
    rejects(() => authenticator().authenticate(request('GET', '/test.txt', tampered)), 'SignatureDoesNotMatch');
  });

  test('accepts the ListObjects and GET ?lifecycle examples (query strings)', () => {
    const headers = (signature: string): [string, string][] => [
      ['Host', HOST],
      ['x-amz-date', '20130524T000000Z'],
      ['x-amz-content-sha256', EMPTY_SHA256],
      ['Authorization', `AWS4-HMAC-SHA256 Credential=${SCOPE}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=${signature}`],
    ];
    const auth = authenticator();
    auth.authenticate(request('GET', '/?max-keys=2&prefix=J', headers('34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7')));
    auth.authenticate(request('GET', '/?lifecycle', headers('fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543')));
  });

  test('accepts the PUT object example (Date header, "$" in the key, a hex payload hash)', () => {
    const req = request('PUT', '/test%24file.text', [
      ['Host', HOST],
      ['Date', 'Fri, 24 May 2013 00:00:00 GMT'],
      ['x-amz-date', '20130524T000000Z'],
      ['x-amz-storage-class', 'REDUCED_REDUNDANCY'],
      ['x-amz-content-sha256', '44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072'],
      ['Content-Length', '21'],
      [
        'Authorization',
        `AWS4-HMAC-SHA256 Credential=${SCOPE},SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd`,
      ],
    ]);
    authenticator().authenticate(req);
    // The same hash on a request without a body cannot be right.
    req.headers.delete('content-length');
    rejects(() => authenticator().authenticate(req), 'XAmzContentSHA256Mismatch', 400);
  });

  test('presigned URL example: valid within X-Amz-Expires, expired after, tampered rejected', () => {
    const url =
      '/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request' +
      '&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host' +
      '&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404';
    const req = request('GET', url, [['Host', HOST]]);
    assert.deepEqual(authenticator({ now: T0 + 3600_000 }).authenticate(req), { accessKeyId: AKID, presigned: true });
    const expired = rejects(() => authenticator({ now: T0 + 86_401_000 }).authenticate(req), 'AccessDenied', 403);
    assert.match(expired.message, /expired/);
    rejects(() => authenticator().authenticate(request('GET', url.replace('86400', '86401'), [['Host', HOST]])), 'SignatureDoesNotMatch');
    rejects(() => authenticator().authenticate(request('GET', url.replace('X-Amz-Expires=86400', 'X-Amz-Expires=999999'), [['Host', HOST]])), 'AuthorizationQueryParametersError');
    rejects(() => authenticator().authenticate(request('GET', url.replace('&X-Amz-SignedHeaders=host', ''), [['Host', HOST]])), 'AuthorizationQueryParametersError');
  });

  test('clock skew, unknown keys, wrong region, malformed and missing authorization', () => {
    const good = 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41';
    const req = request('GET', '/test.txt', getObjectHeaders(good));
    authenticator({ now: T0 + 14 * 60_000 }).authenticate(req);
    const skewed = rejects(() => authenticator({ now: T0 + 16 * 60_000 }).authenticate(req), 'RequestTimeTooSkewed', 403);
    assert.equal(skewed.fields.RequestTime, '20130524T000000Z');
    rejects(() => authenticator({ now: T0 - 16 * 60_000 }).authenticate(req), 'RequestTimeTooSkewed', 403);

    const other = request('GET', '/test.txt', getObjectHeaders(good).map(([k, v]): [string, string] => [k, v.replace(AKID, 'AKIDUNKNOWN')]));
    rejects(() => authenticator().authenticate(other), 'InvalidAccessKeyId', 403);
    const region = request('GET', '/test.txt', getObjectHeaders(good).map(([k, v]): [string, string] => [k, v.replace('us-east-1', 'eu-west-1')]));
    assert.equal(rejects(() => authenticator().authenticate(region), 'AuthorizationHeaderMalformed', 400).fields.Region, 'us-east-1');

    const noHash = request('GET', '/test.txt', getObjectHeaders(good).filter(([k]) => k !== 'x-amz-content-sha256'));
    rejects(() => authenticator().authenticate(noHash), 'InvalidRequest', 400);
    const badHash = request('GET', '/test.txt', getObjectHeaders(good).map(([k, v]): [string, string] => (k === 'x-amz-content-sha256' ? [k, 'abc'] : [k, v])));
    rejects(() => authenticator().authenticate(badHash), 'InvalidArgument', 400);
    const noDate = request('GET', '/test.txt', getObjectHeaders(good).filter(([k]) => k !== 'x-amz-date'));
    rejects(() => authenticator().authenticate(noDate), 'AccessDenied', 403);
    rejects(() => authenticator().authenticate(request('GET', '/x', [['Authorization', 'AWS AKID:sig']])), 'AccessDenied', 403);
    rejects(() => authenticator().authenticate(request('GET', '/x', [['Authorization', 'AWS no-signature']])), 'InvalidArgument', 400);
    rejects(() => authenticator().authenticate(request('GET', '/x', [['Authorization', 'AWS4-HMAC-SHA256 Credential=x']])), 'AuthorizationHeaderMalformed', 400);
    rejects(() => authenticator().authenticate(request('GET', '/x', [['Authorization', 'Bearer x']])), 'InvalidArgument', 400);

    rejects(() => authenticator().authenticate(request('GET', '/x', [['Host', HOST]])), 'AccessDenied', 403);
    assert.deepEqual(authenticator({ anonymous: true }).authenticate(request('GET', '/x', [['Host', HOST]])), { accessKeyId: null, presigned: false });
    // Anonymous access does not let a bad signature through.
    rejects(() => authenticator({ anonymous: true }).authenticate(request('GET', '/test.txt', getObjectHeaders('0'.repeat(64)))), 'SignatureDoesNotMatch');
  });
});
