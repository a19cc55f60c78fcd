#!/usr/bin/env node
// The S3 gateway against the SDK, on one warm file, all in the same run (these machines are
// noisy: only same-run ratios mean anything):
//   - fanout SDK (FanoutClient.createReadStream, in a Node process of its own)
//   - the worker's S3 gateway read with the AWS SDK v3 (GetObjectCommand, a process of its own)
//   - the S3 gateway read with curl through a presigned URL (a native client, for reference)
//   - cat from the OS page cache
// Runs alternate between readers; the median of each is reported, with ratios to the SDK.
//
//   node bench/gateway.mjs [--size 2GiB] [--runs 3] [--page-size 4MiB]
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, bin, median, parseSize, root, waitHealthy, writeRandomFile } from './common.mjs';

const args = benchArgs({ size: '2GiB', runs: '3', 'page-size': '4MiB' });
const size = parseSize(args.size);
const runs = Number(args.runs);
const pageSize = args['page-size'];
const KEYS = { accessKeyId: 'BENCHACCESSKEY', secretAccessKey: 'bench-secret-key' };

function run(cmd, argv) {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.once('error', reject);
    proc.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${argv.join(' ')} exited ${code}`))));
  });
}

async function timed(fn) {
  const { bytes, seconds } = await fn();
  if (bytes !== size) throw new Error(`read ${bytes} bytes, expected ${size}`);
  return seconds;
}

/** One read in a fresh Node process; it prints {bytes, seconds}. */
async function child(kind, options) {
  const out = await run(process.execPath, ['--input-type=module', '-e', CHILD, kind, JSON.stringify({ ...options, keys: KEYS, root })]);
  return JSON.parse(out.trim().split('\n').pop());
}

const CHILD = `
const [kind, json] = process.argv.slice(1);
const { endpoint, keys, root } = JSON.parse(json);
const drain = async (stream) => { let n = 0; for await (const c of stream) n += c.length; return n; };
let read, done = () => {};
if (kind === 'sdk') {
  const { FanoutClient } = await import(root + '/dist/src/client/index.js');
  const sdk = new FanoutClient({ endpoint });
  read = async () => drain(await sdk.createReadStream('/data/model.bin'));
  done = () => sdk.close();
} else {
  const { createRequire } = await import('node:module');
  const { GetObjectCommand, S3Client } = createRequire(root + '/package.json')('@aws-sdk/client-s3');
  const s3 = new S3Client({ endpoint, region: 'us-east-1', credentials: keys, forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  read = async () => drain((await s3.send(new GetObjectCommand({ Bucket: 'data', Key: 'model.bin' }))).Body);
  done = () => s3.destroy();
}
const started = process.hrtime.bigint();
const bytes = await read();
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await done();
console.log(JSON.stringify({ bytes, seconds }));
`;

const work = await mkdtemp(join(tmpdir(), 'fanout-bench-gw-'));
let worker;
try {
  const srcDir = join(work, 'src');
  await mkdir(srcDir);
  const file = join(srcDir, 'model.bin');
  process.stderr.write(`writing a ${size} byte random file…\n`);
  await writeRandomFile(file, size);

  const port = 18450 + Math.floor(Math.random() * 500);
  const endpoint = `http://127.0.0.1:${port}`;
  const s3Endpoint = `http://127.0.0.1:${port + 1}`;
  worker = spawn(
    process.execPath,
    [bin, 'serve', srcDir, '--listen', `127.0.0.1:${port}`, '--s3-listen', `127.0.0.1:${port + 1}`, '--data-dir', join(work, 'store'),
      '--page-size', pageSize, '--capacity', `${Math.ceil((size * 1.5) / 2 ** 20)}MiB`, '--log-level', 'warn'],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, FANOUT_S3_ACCESS_KEY: KEYS.accessKeyId, FANOUT_S3_SECRET_KEY: KEYS.secretAccessKey } },
  );
  await waitHealthy(`${endpoint}/healthz`);

  // Each JS reader runs in a fresh process of its own (like a user's loader would), timed
  // inside the process from the first request to the last byte, so neither module loading nor
  // the other readers' heaps and connection pools weigh on it.
  const readers = {
    'fanout SDK': () => child('sdk', { endpoint }),
    'S3 gateway, AWS SDK v3': () => child('s3', { endpoint: s3Endpoint }),
    'S3 gateway, curl (presigned)': async () => {
      const url = await presign(s3Endpoint);
      const started = process.hrtime.bigint();
      const out = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{size_download}', url]);
      return { bytes: Number(out), seconds: Number(process.hrtime.bigint() - started) / 1e9 };
    },
    'cat (page cache)': async () => {
      const started = process.hrtime.bigint();
      await run('sh', ['-c', `cat ${file} > /dev/null`]);
      return { bytes: size, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
    },
  };

  // Warm: the page store holds every page, the OS caches the source file.
  process.stderr.write('warming…\n');
  await timed(readers['fanout SDK']);
  await timed(readers['cat (page cache)']);
  const times = Object.fromEntries(Object.keys(readers).map((name) => [name, []]));
  for (let i = 0; i < runs; i++) {
    for (const [name, read] of Object.entries(readers)) times[name].push(await timed(read));
  }

  const seconds = Object.fromEntries(Object.entries(times).map(([name, xs]) => [name, median(xs)]));
  const base = seconds['fanout SDK'];
  console.log(`file ${(size / 2 ** 30).toFixed(2)} GiB, warm, median of ${runs} runs, page size ${pageSize}`);
  console.log('| reader | seconds | GB/s | throughput vs SDK |');
  console.log('|---|---|---|---|');
  for (const [name, t] of Object.entries(seconds)) {
    console.log(`| ${name} | ${t.toFixed(2)} | ${(size / t / 1e9).toFixed(2)} | ${(base / t).toFixed(2)}× |`);
  }
  const ratio = base / seconds['S3 gateway, AWS SDK v3'];
  console.log(`gateway (AWS SDK) / fanout SDK = ${ratio.toFixed(2)} (target ≥ 0.8)`);
  await mkdir(join(root, 'bench/out'), { recursive: true });
  await writeFile(join(root, 'bench/out/gateway.json'), JSON.stringify({ size, runs, pageSize, seconds, all: times, gatewayVsSdk: ratio }, null, 2));
} finally {
  if (worker) {
    worker.kill('SIGTERM');
    await new Promise((r) => (worker.exitCode !== null ? r() : worker.once('exit', r)));
  }
  await rm(work, { recursive: true, force: true });
}

/** A presigned GET for curl, with the SDK's signer (no extra dependency: SigV4 query auth by hand). */
async function presign(s3Endpoint) {
  const { canonicalRequest, formatAmzDate, signatureHex, signingKey, stringToSign, UNSIGNED_PAYLOAD } = await import(join(root, 'dist/src/gateway/sigv4.js'));
  const url = new URL(`${s3Endpoint}/data/model.bin`);
  const amzDate = formatAmzDate(Date.now());
  const scope = `${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
  const query = [
    ['X-Amz-Algorithm', 'AWS4-HMAC-SHA256'],
    ['X-Amz-Credential', `${KEYS.accessKeyId}/${scope}`],
    ['X-Amz-Date', amzDate],
    ['X-Amz-Expires', '600'],
    ['X-Amz-SignedHeaders', 'host'],
  ];
  const canonical = canonicalRequest({ method: 'GET', path: url.pathname, query, headers: new Map([['host', [url.host]]]), signedHeaders: ['host'], payloadHash: UNSIGNED_PAYLOAD });
  const signature = signatureHex(signingKey(KEYS.secretAccessKey, amzDate.slice(0, 8), 'us-east-1', 's3'), stringToSign(amzDate, scope, canonical));
  for (const [k, v] of query) url.searchParams.set(k, v);
  url.searchParams.set('X-Amz-Signature', signature);
  return url.toString();
}
