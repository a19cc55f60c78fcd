import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  GetBucketLocationCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  paginateListObjectsV2,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { canonicalRequest, EMPTY_SHA256, formatAmzDate, headerMap, signatureHex, signingKey, stringToSign } from '../../src/gateway/sigv4.js';
import { sha256 } from '../harness/cli.js';
import { freePort } from '../harness/ports.js';
import { WorkerProcess, fanoutBin, repoRoot } from '../harness/workers.js';

const MiB = 1024 * 1024;
const KEY = { accessKeyId: 'GATEWAYTESTKEY', secretAccessKey: 'gateway-test-secret/with+chars' };
/**
 * One awscli of each major version on this machine, since v1 presigns with SigV2 and v2 with
 * SigV4: Debian's v2 (/usr/bin/aws), whatever `aws` comes first on PATH (a pyenv awscli v1 on
 * some images), pyenv's shim, and the pinned v1 that scripts/install-awscli-v1.sh installs.
 */
const AWS_CLIS = (() => {
  const found = new Map<string, string>();
  const candidates = ['/usr/bin/aws', 'aws', join(process.env.PYENV_ROOT ?? join(homedir(), '.pyenv'), 'shims/aws'), '/opt/fanout-test/awscli-v1/bin/aws'];
  for (const bin of candidates) {
    try {
      const version = execFileSync(bin, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 }).trim();
      const major = /aws-cli\/(\d+)/.exec(version)?.[1];
      if (major && ![...found.values()].includes(major)) found.set(bin, major);
    } catch {
      // not installed, or broken: the other one is tested
    }
  }
  return [...found].map(([bin, major]) => ({ bin, label: `awscli v${major}` }));
})();

/**
 * Every python3 here with boto3, once per interpreter: Debian's (botocore 1.29) and a pip one on
 * PATH (pyenv), whose SigV2 signing of bucket requests differs.
 */
const PYTHONS = (() => {
  const found = new Map<string, string>();
  for (const bin of ['/usr/bin/python3', 'python3']) {
    try {
      const out = execFileSync(bin, ['-c', 'import sys, boto3, botocore; print(sys.executable, botocore.__version__)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
      const [executable, version] = out.trim().split(' ') as [string, string];
      if (!found.has(executable)) found.set(executable, version);
    } catch {
      // no boto3 under this one
    }
  }
  // Debian's python3-boto3 is installed by scripts/install-system-deps.sh: its absence is a failure, not a skip.
  if (found.size === 0) found.set('/usr/bin/python3', 'missing');
  return [...found].map(([bin, version]) => ({ bin, label: `(botocore ${version}, ${bin})` }));
})();

/** Keys of the nested tree, in S3 (UTF-8 byte) order. */
const TREE = ['tree/a.txt', 'tree/a/1.txt', 'tree/a/2.txt', 'tree/b/4.txt', 'tree/b/c/3.txt', 'tree/sp ace+plus.txt', 'tree/top.txt'];

function s3(endpoint: string, extra: Partial<S3ClientConfig> = {}): S3Client {
  return new S3Client({
    endpoint,
    region: 'us-east-1',
    credentials: KEY,
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...extra,
  });
}

/** The S3 error an SDK call failed with: its code (name) and HTTP status. */
async function s3Failure(promise: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await promise;
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode };
  }
  assert.fail('expected the request to fail');
}

describe('the S3 gateway, with the AWS SDK v3 and awscli', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  let endpoint: string;
  let client: S3Client;
  let big: Buffer;

  const aws = (bin: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const childEnv = {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: work,
        AWS_ACCESS_KEY_ID: KEY.accessKeyId,
        AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey,
        AWS_DEFAULT_REGION: 'us-east-1',
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_CONFIG_FILE: join(work, 'no-aws-config'),
        AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-aws-credentials'),
        AWS_PAGER: '',
        ...env,
      };
      execFile(bin, ['--endpoint-url', endpoint, ...args], { env: childEnv, maxBuffer: 64 * MiB }, (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-gw-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-gw-work-'));
    big = randomBytes(9 * MiB + 12345);
    await writeFile(join(source, 'big.bin'), big);
    await writeFile(join(source, 'hello.txt'), 'hello fanout\n');
    // An hour old: If-Modified-Since a minute after it is still in the past.
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(join(source, 'hello.txt'), hourAgo, hourAgo);
    await writeFile(join(source, 'empty.bin'), '');
    await mkdir(join(source, 'tree/a'), { recursive: true });
    await mkdir(join(source, 'tree/b/c'), { recursive: true });
    for (const key of TREE) await writeFile(join(source, key), `content of ${key}\n`);
    const port = await freePort();
    endpoint = `http://127.0.0.1:${port}`;
    worker = await WorkerProcess.start({
      id: 'gw',
      mounts: { data: source },
      pageSize: '1MiB',
      gateway: { listen: `127.0.0.1:${port}`, credentials: [KEY] },
    });
    client = s3(endpoint);
  });

  after(async () => {
    client?.destroy();
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('buckets are the mounts: ListBuckets, GetBucketLocation, HeadBucket', async () => {
    const buckets = await client.send(new ListBucketsCommand({}));
    assert.deepEqual(buckets.Buckets?.map((b) => b.Name), ['data']);
    const location = await client.send(new GetBucketLocationCommand({ Bucket: 'data' }));
    assert.equal(location.LocationConstraint ?? '', '');
    await client.send(new HeadBucketCommand({ Bucket: 'data' }));
    assert.equal((await s3Failure(client.send(new HeadBucketCommand({ Bucket: 'nope' })))).status, 404);
    assert.deepEqual(await s3Failure(client.send(new ListObjectsV2Command({ Bucket: 'nope' }))), { name: 'NoSuchBucket', status: 404 });
  });

  test('GetObject streams whole objects and ranges through the cluster; HeadObject', async () => {
    const before = await worker.metrics();
    const whole = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'big.bin' }));
    const hash = createHash('sha256');
    for await (const chunk of whole.Body as AsyncIterable<Buffer>) hash.update(chunk);
    assert.equal(hash.digest('hex'), sha256(big));
    assert.equal(whole.ContentLength, big.length);
    assert.equal(whole.AcceptRanges, 'bytes');
    const afterRead = await worker.metrics();
    // 10 pages of 1 MiB went through the page path (hits or misses), not around it.
    const pages = (m: Record<string, number>) => (m.fanout_page_hits_total ?? 0) + (m.fanout_page_misses_total ?? 0);
    assert.ok(pages(afterRead) - pages(before) >= 10, 'pages served by the worker');

    // Warm pages come straight from the store in pooled buffers, reused once written out:
    // concurrent readers (whole objects and ranges) must each get exactly their bytes.
    const concurrent = await Promise.all(
      [0, 1, 2, 3, 4, 5].map(async (i) => {
        const start = i * 777_777;
        const res = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'big.bin', Range: i % 2 ? `bytes=${start}-` : undefined }));
        const h = createHash('sha256');
        for await (const chunk of res.Body as AsyncIterable<Buffer>) h.update(chunk);
        return h.digest('hex') === sha256(i % 2 ? big.subarray(start) : big);
      }),
    );
    assert.deepEqual(concurrent, [true, true, true, true, true, true]);

    const head = await client.send(new HeadObjectCommand({ Bucket: 'data', Key: 'big.bin' }));
    assert.equal(head.ContentLength, big.length);
    assert.match(head.ETag ?? '', /^".+"$/);
    assert.ok(head.LastModified instanceof Date);

    const range = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'big.bin', Range: 'bytes=1048570-1048589' }));
    assert.deepEqual(Buffer.from(await range.Body!.transformToByteArray()), big.subarray(1048570, 1048590));
    assert.equal(range.ContentRange, `bytes 1048570-1048589/${big.length}`);
    const suffix = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'big.bin', Range: 'bytes=-10' }));
    assert.deepEqual(Buffer.from(await suffix.Body!.transformToByteArray()), big.subarray(big.length - 10));
    const empty = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'empty.bin' }));
    assert.equal((await empty.Body!.transformToByteArray()).length, 0);

    const overridden = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', ResponseContentType: 'text/plain' }));
    assert.equal(overridden.ContentType, 'text/plain');
    assert.equal(await overridden.Body!.transformToString(), 'hello fanout\n');
  });

  test('conditional GETs: 304 and 412', async () => {
    const { ETag, LastModified } = await client.send(new HeadObjectCommand({ Bucket: 'data', Key: 'hello.txt' }));
    const later = new Date(LastModified!.getTime() + 60_000);
    const earlier = new Date(LastModified!.getTime() - 60_000);
    assert.equal((await s3Failure(client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', IfNoneMatch: ETag })))).status, 304);
    assert.equal((await s3Failure(client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', IfModifiedSince: later })))).status, 304);
    assert.deepEqual(await s3Failure(client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', IfMatch: '"other"' }))), {
      name: 'PreconditionFailed',
      status: 412,
    });
    assert.equal((await s3Failure(client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', IfUnmodifiedSince: earlier })))).status, 412);
    const ok = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', IfMatch: ETag, IfModifiedSince: earlier }));
    assert.equal(await ok.Body!.transformToString(), 'hello fanout\n');
    // A date past the gateway's clock is ignored, as S3 ignores it: the object, not 304.
    const tomorrow = new Date(Date.now() + 86_400_000);
    const future = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', IfModifiedSince: tomorrow }));
    assert.equal(await future.Body!.transformToString(), 'hello fanout\n');
    assert.equal((await client.send(new HeadObjectCommand({ Bucket: 'data', Key: 'hello.txt', IfModifiedSince: tomorrow }))).$metadata.httpStatusCode, 200);
  });

  test('errors: NoSuchKey, InvalidRange, NotImplemented writes, bad keys, signatures and clocks', async () => {
    assert.deepEqual(await s3Failure(client.send(new GetObjectCommand({ Bucket: 'data', Key: 'missing.bin' }))), { name: 'NoSuchKey', status: 404 });
    assert.deepEqual(await s3Failure(client.send(new GetObjectCommand({ Bucket: 'data', Key: 'tree/a' }))), { name: 'NoSuchKey', status: 404 });
    assert.deepEqual(await s3Failure(client.send(new GetObjectCommand({ Bucket: 'nope', Key: 'x' }))), { name: 'NoSuchBucket', status: 404 });
    assert.deepEqual(await s3Failure(client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', Range: 'bytes=1000-2000' }))), {
      name: 'InvalidRange',
      status: 416,
    });
    assert.deepEqual(await s3Failure(client.send(new PutObjectCommand({ Bucket: 'data', Key: 'new.txt', Body: 'x' }))), { name: 'NotImplemented', status: 501 });

    const wrongSecret = s3(endpoint, { credentials: { ...KEY, secretAccessKey: 'wrong' }, maxAttempts: 1 });
    const unknownKey = s3(endpoint, { credentials: { accessKeyId: 'NOBODY', secretAccessKey: 'x' }, maxAttempts: 1 });
    const skewed = s3(endpoint, { systemClockOffset: -20 * 60_000, maxAttempts: 1 });
    try {
      assert.deepEqual(await s3Failure(wrongSecret.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt' }))), { name: 'SignatureDoesNotMatch', status: 403 });
      assert.deepEqual(await s3Failure(unknownKey.send(new ListObjectsV2Command({ Bucket: 'data' }))), { name: 'InvalidAccessKeyId', status: 403 });
      assert.deepEqual(await s3Failure(skewed.send(new ListObjectsV2Command({ Bucket: 'data' }))), { name: 'RequestTimeTooSkewed', status: 403 });
    } finally {
      for (const c of [wrongSecret, unknownKey, skewed]) c.destroy();
    }

    // Unsigned requests are refused with an S3 XML error that names the request.
    const res = await fetch(`${endpoint}/data/hello.txt`);
    assert.equal(res.status, 403);
    const xml = await res.text();
    assert.match(xml, /<Code>AccessDenied<\/Code>/);
    assert.match(xml, new RegExp(`<RequestId>${res.headers.get('x-amz-request-id')}</RequestId>`));
  });

  test('ListObjectsV2: pagination with continuation tokens, delimiter and common prefixes, start-after; ListObjects v1', async () => {
    const keys: string[] = [];
    let pages = 0;
    for await (const page of paginateListObjectsV2({ client, pageSize: 2 }, { Bucket: 'data', Prefix: 'tree/' })) {
      pages++;
      keys.push(...(page.Contents ?? []).map((o) => o.Key!));
      assert.ok((page.KeyCount ?? 0) <= 2);
    }
    assert.deepEqual(keys, TREE);
    assert.equal(pages, Math.ceil(TREE.length / 2));

    const all = await client.send(new ListObjectsV2Command({ Bucket: 'data' }));
    assert.deepEqual(all.Contents?.map((o) => o.Key), ['big.bin', 'empty.bin', 'hello.txt', ...TREE]);
    assert.equal(all.Contents?.[0]?.Size, big.length);
    assert.equal(all.IsTruncated, false);

    const top = await client.send(new ListObjectsV2Command({ Bucket: 'data', Delimiter: '/' }));
    assert.deepEqual(top.CommonPrefixes?.map((p) => p.Prefix), ['tree/']);
    assert.deepEqual(top.Contents?.map((o) => o.Key), ['big.bin', 'empty.bin', 'hello.txt']);

    const seen: string[] = [];
    let token: string | undefined;
    for (let i = 0; i < 10; i++) {
      const page = await client.send(new ListObjectsV2Command({ Bucket: 'data', Prefix: 'tree/', Delimiter: '/', MaxKeys: 2, ContinuationToken: token }));
      seen.push(...(page.CommonPrefixes ?? []).map((p) => p.Prefix!), ...(page.Contents ?? []).map((o) => o.Key!));
      token = page.NextContinuationToken;
      if (!page.IsTruncated) break;
      assert.ok(token);
    }
    assert.deepEqual(seen.sort(), ['tree/a.txt', 'tree/a/', 'tree/b/', 'tree/sp ace+plus.txt', 'tree/top.txt']);

    const after = await client.send(new ListObjectsV2Command({ Bucket: 'data', Prefix: 'tree/', StartAfter: 'tree/b/4.txt' }));
    assert.deepEqual(after.Contents?.map((o) => o.Key), TREE.slice(TREE.indexOf('tree/b/4.txt') + 1));

    const v1: string[] = [];
    let marker: string | undefined;
    for (let i = 0; i < 10; i++) {
      const page = await client.send(new ListObjectsCommand({ Bucket: 'data', Prefix: 'tree/', MaxKeys: 3, Marker: marker }));
      v1.push(...(page.Contents ?? []).map((o) => o.Key!));
      if (!page.IsTruncated) break;
      marker = page.NextMarker ?? page.Contents?.at(-1)?.Key;
    }
    assert.deepEqual(v1, TREE);
    assert.deepEqual(await s3Failure(client.send(new ListObjectsV2Command({ Bucket: 'data', ContinuationToken: '!!' }))), { name: 'InvalidArgument', status: 400 });
  });

  test('as S3 answers them: ExpectedBucketOwner, SSE-C keys on an unencrypted object, object owners in listings', async () => {
    const owner = (await client.send(new ListBucketsCommand({}))).Owner?.ID;
    assert.equal(owner, 'fanout');
    // The gateway's own owner id is served; another account's is refused rather than trusted.
    const body = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', ExpectedBucketOwner: owner }));
    assert.equal(await body.Body?.transformToString(), 'hello fanout\n');
    assert.deepEqual(await s3Failure(client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', ExpectedBucketOwner: '111122223333' }))), { name: 'AccessDenied', status: 403 });
    assert.deepEqual(await s3Failure(client.send(new ListObjectsV2Command({ Bucket: 'data', ExpectedBucketOwner: '111122223333' }))), { name: 'AccessDenied', status: 403 });
    // A HEAD's error has no body to name it: its status says it.
    assert.equal((await s3Failure(client.send(new HeadBucketCommand({ Bucket: 'data', ExpectedBucketOwner: '111122223333' })))).status, 403);
    // A customer's key for an object that is not encrypted with it: 400, not the bytes.
    const sseC = { SSECustomerAlgorithm: 'AES256', SSECustomerKey: randomBytes(32).toString('base64') };
    assert.deepEqual(await s3Failure(client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt', ...sseC }))), { name: 'InvalidRequest', status: 400 });
    assert.equal((await s3Failure(client.send(new HeadObjectCommand({ Bucket: 'data', Key: 'hello.txt', ...sseC })))).status, 400);
    // Owners: in every v1 entry, in v2 with FetchOwner only.
    const v2 = await client.send(new ListObjectsV2Command({ Bucket: 'data', Prefix: 'hello' }));
    assert.equal(v2.Contents?.[0]?.Owner, undefined);
    const v2Owner = await client.send(new ListObjectsV2Command({ Bucket: 'data', Prefix: 'hello', FetchOwner: true }));
    assert.equal(v2Owner.Contents?.[0]?.Owner?.ID, owner);
    const v1 = await client.send(new ListObjectsCommand({ Bucket: 'data', Prefix: 'hello' }));
    assert.equal(v1.Contents?.[0]?.Owner?.ID, owner);
  });

  // Both majors, or one signature version goes untested. In CI (CI=true) a missing one fails the
  // run; elsewhere it is a skip that names the script which installs it.
  const majors = AWS_CLIS.map((c) => c.label);
  const missingMajors = ['awscli v1', 'awscli v2'].filter((m) => !majors.includes(m));
  test(
    'awscli v1 (SigV2 presigning) and v2 (SigV4) are both installed',
    { skip: missingMajors.length > 0 && !process.env.CI ? `missing ${missingMajors.join(', ')}: run scripts/install-system-deps.sh all as root` : false },
    () => assert.deepEqual(missingMajors, [], 'scripts/install-system-deps.sh all installs Debian awscli v2 and a pinned awscli v1'),
  );

  for (const { bin, label } of AWS_CLIS) {
    const cli = (args: string[], env: Record<string, string> = {}) => aws(bin, args, env);
    test(`${label}: s3 ls, multipart-range s3 cp, s3api get-object --range, errors`, async () => {
      const ls = await cli(['s3', 'ls', 's3://data/tree/']);
      assert.equal(ls.code, 0, ls.stderr);
      assert.match(ls.stdout, /PRE a\//);
      assert.match(ls.stdout, /PRE b\//);
      assert.match(ls.stdout, /sp ace\+plus\.txt/);
      const recursive = await cli(['s3', 'ls', '--recursive', 's3://data/tree/']);
      assert.deepEqual(recursive.stdout.trim().split('\n').map((l) => l.replace(/^\S+\s+\S+\s+\d+\s/, '')), TREE);
      const buckets = await cli(['s3', 'ls']);
      assert.match(buckets.stdout, /\sdata\n/);

      // 9 MiB is over awscli's 8 MiB multipart threshold: it downloads ranges in parallel.
      const out = join(work, 'big.out');
      const cp = await cli(['s3', 'cp', 's3://data/big.bin', out, '--debug']);
      assert.equal(cp.code, 0, cp.stderr.slice(-2000));
      assert.equal(sha256(await readFile(out)), sha256(big));
      assert.ok((cp.stderr.match(/'Range': 'bytes=\d+-\d+'/g) ?? []).length >= 2, 'awscli made ranged GETs');

      const part = join(work, 'part.out');
      const get = await cli(['s3api', 'get-object', '--bucket', 'data', '--key', 'big.bin', '--range', 'bytes=5000000-5000099', part]);
      assert.equal(get.code, 0, get.stderr);
      assert.deepEqual(await readFile(part), big.subarray(5000000, 5000100));
      assert.match(get.stdout, /"ContentRange": "bytes 5000000-5000099\/\d+"/);

      const wrong = await cli(['s3', 'ls', 's3://data/'], { AWS_SECRET_ACCESS_KEY: 'wrong' });
      assert.notEqual(wrong.code, 0);
      assert.match(wrong.stderr, /SignatureDoesNotMatch/);
      const unknown = await cli(['s3', 'ls', 's3://data/'], { AWS_ACCESS_KEY_ID: 'NOBODY' });
      assert.match(unknown.stderr, /InvalidAccessKeyId/);
      const put = await cli(['s3', 'cp', join(work, 'part.out'), 's3://data/uploaded.bin']);
      assert.notEqual(put.code, 0);
      assert.match(put.stderr, /NotImplemented/);
    });

    test(`presigned URLs (${label}) work with plain HTTP clients; tampered or expired ones do not`, async () => {
      const presign = await cli(['s3', 'presign', 's3://data/big.bin', '--expires-in', '300']);
      assert.equal(presign.code, 0, presign.stderr);
      const url = presign.stdout.trim();
      // What makes the two worth running: v1 signs the URL with SigV2, v2 with SigV4.
      assert.match(url, label === 'awscli v1' ? /[?&]AWSAccessKeyId=.*[?&]Signature=|[?&]Signature=.*[?&]AWSAccessKeyId=/ : /[?&]X-Amz-Signature=/);
      const res = await fetch(url, { headers: { range: 'bytes=0-1048575' } });
      assert.equal(res.status, 206);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), big.subarray(0, MiB));
      const full = await fetch(url);
      assert.equal(sha256(Buffer.from(await full.arrayBuffer())), sha256(big));

      const tampered = await fetch(url.replace('big.bin', 'hello.txt'));
      assert.equal(tampered.status, 403);
      assert.match(await tampered.text(), /SignatureDoesNotMatch/);
      const signed = new URL(url);
      // SigV2 URLs carry Expires (epoch seconds), SigV4 ones X-Amz-Date + X-Amz-Expires.
      if (signed.searchParams.has('Expires')) signed.searchParams.set('Expires', String(Math.floor(Date.now() / 1000) - 3600));
      else signed.searchParams.set('X-Amz-Date', formatAmzDate(Date.now() - 3600_000));
      const expired = await fetch(signed);
      assert.equal(expired.status, 403);
      assert.match(await expired.text(), /<Code>(AccessDenied|SignatureDoesNotMatch)<\/Code>/);
    });
  }

  for (const python of PYTHONS) {
    test(`boto3 ${python.label}: SigV4 and SigV2 requests, presigned URLs of both kinds`, async () => {
      const script = join(repoRoot, 'test/clients/boto3_gateway.py');
      const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) =>
        execFile(python.bin, [script, endpoint, KEY.accessKeyId, KEY.secretAccessKey], { env: { PATH: '/usr/bin:/bin', HOME: work }, timeout: 120_000 }, (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve({ stdout }),
        ),
      );
      type Read = { sha256: string; range: string; keys: string[]; size: number; bucket: { keys: string[]; head: number; location: string | null } };
      const got = JSON.parse(stdout) as Record<string, Read & { url?: string; body?: string }> & { listingV2: string; listingV4: string };
      for (const kind of ['sigv4', 'sigv2']) {
        assert.equal(got[kind]!.sha256, sha256(big), kind);
        assert.equal(got[kind]!.range, big.subarray(100, 200).toString('hex'), kind);
        assert.deepEqual(got[kind]!.keys, TREE, kind);
        assert.equal(got[kind]!.size, big.length, kind);
        assert.deepEqual(got[kind]!.bucket, { keys: ['big.bin', 'empty.bin', 'hello.txt', ...TREE], head: 200, location: null }, kind);
      }
      for (const kind of ['presignDefault', 'presignV4', 'presignV2']) assert.equal(got[kind]!.body, 'hello fanout\n', kind);
      assert.match(got.presignV2!.url!, /[?&]AWSAccessKeyId=.*&Signature=|[?&]Signature=.*AWSAccessKeyId=/);
      assert.match(got.presignV4!.url!, /X-Amz-Signature=/);
      // Debian's botocore (1.29) presigns SigV2 by default; a later one may switch to SigV4: both work.
      assert.match(got.presignDefault!.url!, /[?&](AWSAccessKeyId|X-Amz-Credential)=/);
      // A presigned listing: its signature's parameters are not subresources (a SigV2 one got 501 "GET bucket ?AWSAccessKeyId").
      for (const kind of ['listingV2', 'listingV4'] as const) {
        const res = await fetch(got[kind]);
        const xml = await res.text();
        assert.equal(res.status, 200, `${kind}: ${xml}`);
        assert.deepEqual([...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => decodeURIComponent(m[1]!.replace(/\+/g, ' '))), TREE, kind);
      }
      assert.match(got.listingV2, /[?&]AWSAccessKeyId=/);
    });
  }

  test('a "+" in the query is a space, as S3 reads it: listed and signed so (the AWS SDK for Java v1 sends "+")', async () => {
    const keysOf = (xml: string) => [...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]!);
    /** GET /data?list-type=2&prefix=… with the query sent as `raw`, signed over `signedPrefix` (%20 for a space). */
    const list = async (raw: string, signedPrefix: string) => {
      const amzDate = formatAmzDate(Date.now());
      const host = new URL(endpoint).host;
      const headers: [string, string][] = [['host', host], ['x-amz-date', amzDate], ['x-amz-content-sha256', EMPTY_SHA256]];
      const signed = ['host', 'x-amz-content-sha256', 'x-amz-date'];
      const query: [string, string][] = [['list-type', '2'], ['prefix', signedPrefix]];
      const canonical = canonicalRequest({ method: 'GET', path: '/data', query, headers: headerMap(headers.flat()), signedHeaders: signed, payloadHash: EMPTY_SHA256 });
      const scope = `${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
      const signature = signatureHex(signingKey(KEY.secretAccessKey, amzDate.slice(0, 8), 'us-east-1', 's3'), stringToSign(amzDate, scope, canonical));
      const authorization = `AWS4-HMAC-SHA256 Credential=${KEY.accessKeyId}/${scope}, SignedHeaders=${signed.join(';')}, Signature=${signature}`;
      const res = await fetch(`${endpoint}/data?list-type=2&prefix=${raw}`, { headers: { 'x-amz-date': amzDate, 'x-amz-content-sha256': EMPTY_SHA256, authorization } });
      const xml = await res.text();
      assert.equal(res.status, 200, `${raw}: ${xml}`);
      return keysOf(xml);
    };
    // The AWS SDK for Java v1 builds the URL with form encoding ("+") and signs with %20: S3 takes both.
    assert.deepEqual(await list('tree/sp+ace', 'tree/sp ace'), ['tree/sp ace+plus.txt']);
    assert.deepEqual(await list('tree/sp%20ace%2Bp', 'tree/sp ace+p'), ['tree/sp ace+plus.txt']);
    assert.deepEqual(await list('tree/sp%2Bace', 'tree/sp+ace'), [], 'a plus is %2B');
  });

  test('virtual-hosted style: the bucket in the Host header', async () => {
    const host = `data.localhost:${new URL(endpoint).port}`;
    const amzDate = formatAmzDate(Date.now());
    const headers: [string, string][] = [
      ['host', host],
      ['x-amz-date', amzDate],
      ['x-amz-content-sha256', EMPTY_SHA256],
    ];
    const signed = ['host', 'x-amz-content-sha256', 'x-amz-date'];
    const canonical = canonicalRequest({ method: 'GET', path: '/hello.txt', query: [], headers: headerMap(headers.flat()), signedHeaders: signed, payloadHash: EMPTY_SHA256 });
    const scope = `${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
    const signature = signatureHex(signingKey(KEY.secretAccessKey, amzDate.slice(0, 8), 'us-east-1', 's3'), stringToSign(amzDate, scope, canonical));
    const authorization = `AWS4-HMAC-SHA256 Credential=${KEY.accessKeyId}/${scope}, SignedHeaders=${signed.join(';')}, Signature=${signature}`;
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${endpoint}/hello.txt`, { headers: { ...Object.fromEntries(headers), authorization } }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 200, body);
    assert.equal(body, 'hello fanout\n');
  });
});

describe('fanout serve', () => {
  test('turns the gateway on, prints its address and development keys, and they work', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fanout-gw-serve-'));
    await mkdir(join(dir, 'src'));
    await writeFile(join(dir, 'src/hello.txt'), 'hello\n');
    const [port, s3Port] = [await freePort(), await freePort()];
    const env = { ...process.env };
    delete env.FANOUT_S3_ACCESS_KEY;
    delete env.FANOUT_S3_SECRET_KEY;
    const proc = spawn(
      process.execPath,
      [fanoutBin, 'serve', join(dir, 'src'), '--listen', `127.0.0.1:${port}`, '--s3-listen', `127.0.0.1:${s3Port}`, '--data-dir', join(dir, 'data'), '--log-level', 'warn'],
      { env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    const exited = new Promise((r) => proc.once('exit', r));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`serve printed no gateway line: ${stderr}`)), 20_000);
        proc.stderr!.on('data', (d: Buffer) => {
          stderr += d.toString();
          if (/secret key \S+/.test(stderr)) {
            clearTimeout(timer);
            resolve();
          }
        });
        proc.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
      });
      assert.match(stderr, new RegExp(`S3 gateway on http://127\\.0\\.0\\.1:${s3Port}`));
      const accessKeyId = /access key (\S+),/.exec(stderr)![1]!;
      const secretAccessKey = /secret key (\S+)/.exec(stderr)![1]!;
      const client = new S3Client({
        endpoint: `http://127.0.0.1:${s3Port}`,
        region: 'us-east-1',
        credentials: { accessKeyId, secretAccessKey },
        forcePathStyle: true,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      try {
        const got = await client.send(new GetObjectCommand({ Bucket: 'data', Key: 'hello.txt' }));
        assert.equal(await got.Body!.transformToString(), 'hello\n');
      } finally {
        client.destroy();
      }
    } finally {
      proc.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
    }
  });
});
