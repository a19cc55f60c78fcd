import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import { evaluateConditions, selectRange } from './conditional.js';
import { S3Error, s3Errors, toS3Error } from './errors.js';
import { errorXml, escapeXml, listBucketsXml, listObjectsV1Xml, listObjectsV2Xml, locationXml, s3UrlEncode } from './xml.js';

describe('S3 XML documents', () => {
  test('escaping, and characters XML cannot carry are dropped', () => {
    assert.equal(escapeXml(`a<b>&"c'`), 'a&lt;b&gt;&amp;&quot;c&apos;');
    assert.equal(escapeXml('a\u0001b\u0009c'), 'ab\tc');
    assert.equal(s3UrlEncode('a b/c+d%é'), 'a%20b/c%2Bd%25%C3%A9');
  });

  test('errors carry code, message, fields, resource and request id', () => {
    const xml = errorXml(s3Errors.noSuchKey('dir/a&b.bin'), '/data/dir/a&b.bin', 'REQ1', 'HOST1');
    assert.equal(
      xml,
      '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>' +
        '<Key>dir/a&amp;b.bin</Key><Resource>/data/dir/a&amp;b.bin</Resource><RequestId>REQ1</RequestId><HostId>HOST1</HostId></Error>',
    );
    assert.match(errorXml(s3Errors.requestTimeTooSkewed('20130524T000000Z', '20130524T010000Z'), '/', 'R', 'H'), /<MaxAllowedSkewMilliseconds>900000</);
  });

  test('ListBuckets, location, ListObjectsV2 and v1', () => {
    const buckets = listBucketsXml([{ name: 'data', created: new Date(0) }], { id: 'fanout', displayName: 'fanout' });
    assert.match(buckets, /<Buckets><Bucket><Name>data<\/Name><CreationDate>1970-01-01T00:00:00.000Z<\/CreationDate><\/Bucket><\/Buckets>/);
    assert.match(locationXml('us-east-1'), /<LocationConstraint xmlns="[^"]+"><\/LocationConstraint>/);
    assert.match(locationXml('eu-west-1'), />eu-west-1</);
    const page = {
      bucket: 'data',
      prefix: 'a b/',
      delimiter: '/',
      maxKeys: 2,
      encodeUrl: true,
      objects: [{ key: 'a b/c+d', size: 5, mtimeMs: 1000, etag: '5-1000' }],
      commonPrefixes: ['a b/e/'],
      truncated: true,
    };
    const v2 = listObjectsV2Xml({ ...page, nextContinuationToken: 'tok' });
    assert.match(v2, /<Prefix>a%20b\/<\/Prefix><Delimiter>\/<\/Delimiter><MaxKeys>2<\/MaxKeys><EncodingType>url<\/EncodingType><KeyCount>2<\/KeyCount><IsTruncated>true<\/IsTruncated><NextContinuationToken>tok</);
    assert.match(v2, /<Contents><Key>a%20b\/c%2Bd<\/Key><LastModified>1970-01-01T00:00:01.000Z<\/LastModified><ETag>&quot;5-1000&quot;<\/ETag><Size>5<\/Size><StorageClass>STANDARD<\/StorageClass><\/Contents><CommonPrefixes><Prefix>a%20b\/e\/<\/Prefix><\/CommonPrefixes>/);
    const v1 = listObjectsV1Xml({ ...page, encodeUrl: false, marker: '', nextMarker: 'a b/e/' });
    assert.match(v1, /<Marker><\/Marker><NextMarker>a b\/e\/<\/NextMarker>/);
    assert.doesNotMatch(v1, /KeyCount|EncodingType/);
  });

  test('fanout errors map to S3 codes', () => {
    const ctx = { bucket: 'data', key: 'x' };
    assert.equal(toS3Error(new FanoutError('NOT_FOUND', ''), ctx).code, 'NoSuchKey');
    assert.equal(toS3Error(new FanoutError('IS_A_DIRECTORY', ''), ctx).code, 'NoSuchKey');
    assert.equal(toS3Error(new FanoutError('UNKNOWN_MOUNT', ''), ctx).code, 'NoSuchBucket');
    assert.equal(toS3Error(new FanoutError('RANGE_NOT_SATISFIABLE', ''), ctx).status, 416);
    assert.equal(toS3Error(new FanoutError('SOURCE_CHANGED', ''), ctx).status, 503);
    assert.equal(toS3Error(new Error('boom'), ctx).code, 'InternalError');
    // Only a worker at a limit asks clients to slow down; a failed source says so.
    const source = toS3Error(new FanoutError('SOURCE_TRUNCATED', 'source cut the body of /data/x'), ctx);
    assert.deepEqual([source.code, source.status], ['ServiceUnavailable', 503]);
    assert.match(source.message, /source .*failed.*cut the body/);
    assert.doesNotMatch(source.message, /reduce your request rate/);
    assert.equal(toS3Error(new FanoutError('OVERLOADED', 'too many connections'), ctx).code, 'SlowDown');
    assert.equal(toS3Error(new FanoutError('SOURCE_UNVERSIONED', ''), ctx).code, 'InvalidObjectState');
  });
});

describe('conditional requests and ranges', () => {
  const version = '10-1000000';
  const mtimeMs = Date.UTC(2024, 0, 1, 12, 0, 0, 500);
  const at = (s: number) => new Date(Date.UTC(2024, 0, 1, 12, 0, s)).toUTCString();
  /** The gateway's clock: a minute after the file's time. */
  const now = Date.UTC(2024, 0, 1, 12, 1, 0);

  test('If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since', () => {
    assert.equal(evaluateConditions({}, version, mtimeMs, now), 'ok');
    assert.equal(evaluateConditions({ 'if-match': `"${version}"` }, version, mtimeMs, now), 'ok');
    assert.equal(evaluateConditions({ 'if-match': `"x", "${version}"` }, version, mtimeMs, now), 'ok');
    assert.equal(evaluateConditions({ 'if-match': '*' }, version, mtimeMs, now), 'ok');
    assert.throws(() => evaluateConditions({ 'if-match': '"other"' }, version, mtimeMs, now), (e: S3Error) => e.status === 412 && e.fields.Condition === 'If-Match');
    assert.equal(evaluateConditions({ 'if-none-match': `"${version}"` }, version, mtimeMs, now), 'not-modified');
    assert.equal(evaluateConditions({ 'if-none-match': '"other"' }, version, mtimeMs, now), 'ok');
    assert.equal(evaluateConditions({ 'if-modified-since': at(0) }, version, mtimeMs, now), 'not-modified', 'same second');
    assert.equal(evaluateConditions({ 'if-modified-since': at(-1) }, version, mtimeMs, now), 'ok');
    assert.equal(evaluateConditions({ 'if-modified-since': 'garbage' }, version, mtimeMs, now), 'ok');
    assert.throws(() => evaluateConditions({ 'if-unmodified-since': at(-1) }, version, mtimeMs, now), (e: S3Error) => e.status === 412);
    assert.equal(evaluateConditions({ 'if-unmodified-since': at(0) }, version, mtimeMs, now), 'ok');
    // If-Match wins over If-Unmodified-Since, If-None-Match over If-Modified-Since (RFC 7232, S3).
    assert.equal(evaluateConditions({ 'if-match': `"${version}"`, 'if-unmodified-since': at(-1) }, version, mtimeMs, now), 'ok');
    assert.equal(evaluateConditions({ 'if-none-match': '"other"', 'if-modified-since': at(5) }, version, mtimeMs, now), 'ok');
  });

  test('an If-Modified-Since later than the gateway\'s clock is ignored, as S3 does (200, not 304)', () => {
    assert.equal(evaluateConditions({ 'if-modified-since': at(60) }, version, mtimeMs, now), 'not-modified', 'the present second');
    assert.equal(evaluateConditions({ 'if-modified-since': at(61) }, version, mtimeMs, now), 'ok', 'a second ahead');
    assert.equal(evaluateConditions({ 'if-modified-since': 'Fri, 01 Jan 2100 00:00:00 GMT' }, version, mtimeMs, now), 'ok');
    // If-Unmodified-Since in the future holds, as before.
    assert.equal(evaluateConditions({ 'if-unmodified-since': 'Fri, 01 Jan 2100 00:00:00 GMT' }, version, mtimeMs, now), 'ok');
  });

  test('dates that are not HTTP-dates are ignored (not read as a year); If-Match compares strongly', () => {
    assert.equal(evaluateConditions({ 'if-modified-since': '9999' }, version, mtimeMs, now), 'ok');
    assert.equal(evaluateConditions({ 'if-unmodified-since': '1' }, version, mtimeMs, now), 'ok');
    assert.equal(evaluateConditions({ 'if-modified-since': 'Monday, 01-Jan-24 12:00:05 GMT' }, version, mtimeMs, now), 'not-modified', "RFC 850's form");
    assert.equal(evaluateConditions({ 'if-modified-since': 'Mon Jan  1 12:00:05 2024' }, version, mtimeMs, now), 'not-modified', "asctime's form");
    assert.throws(() => evaluateConditions({ 'if-match': `W/"${version}"` }, version, mtimeMs, now), (e: S3Error) => e.status === 412);
    assert.equal(evaluateConditions({ 'if-none-match': `W/"${version}"` }, version, mtimeMs, now), 'not-modified');
  });

  test('ranges: suffix, open, clamped, ignored when malformed, 416 outside', () => {
    assert.equal(selectRange({}, 100, version, mtimeMs), undefined);
    assert.deepEqual(selectRange({ range: 'bytes=-10' }, 100, version, mtimeMs), { start: 90, end: 100 });
    assert.deepEqual(selectRange({ range: 'bytes=-1000' }, 100, version, mtimeMs), { start: 0, end: 100 });
    assert.deepEqual(selectRange({ range: 'bytes=10-' }, 100, version, mtimeMs), { start: 10, end: 100 });
    assert.deepEqual(selectRange({ range: 'bytes=10-1000' }, 100, version, mtimeMs), { start: 10, end: 100 });
    assert.equal(selectRange({ range: 'bytes=0-1,5-6' }, 100, version, mtimeMs), undefined);
    assert.equal(selectRange({ range: 'items=0-1' }, 100, version, mtimeMs), undefined);
    // A last byte before the first is an invalid range (RFC 9110 14.1.1), ignored as S3 ignores it: the whole object,
    // even when the first byte lies past the end.
    assert.equal(selectRange({ range: 'bytes=5-2' }, 100, version, mtimeMs), undefined);
    assert.equal(selectRange({ range: 'bytes=500-200' }, 100, version, mtimeMs), undefined);
    assert.throws(() => selectRange({ range: 'bytes=100-' }, 100, version, mtimeMs), (e: S3Error) => e.code === 'InvalidRange' && e.headers['content-range'] === 'bytes */100');
    assert.deepEqual(selectRange({ range: 'bytes=0-0', 'if-range': `"${version}"` }, 100, version, mtimeMs), { start: 0, end: 1 });
    assert.equal(selectRange({ range: 'bytes=0-0', 'if-range': '"old"' }, 100, version, mtimeMs), undefined);
    assert.deepEqual(selectRange({ range: 'bytes=0-0', 'if-range': at(0) }, 100, version, mtimeMs), { start: 0, end: 1 });
  });
});
