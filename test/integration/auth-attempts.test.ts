import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort, waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

/**
 * Guessed credentials from one client address are limited (auth.attempts): after `max` refused
 * tokens or signatures within the window, that address's credentials are refused unchecked
 * (429 TOO_MANY_ATTEMPTS, or S3 503 SlowDown, with Retry-After) until the window ends, while
 * other addresses go on. Each burst comes from its own loopback address (127.0.0.x, Linux routes
 * the whole 127/8 to lo), as the table is shared by the API, the dashboard and the gateway.
 */
const ADMIN = 'attempts-test-admin-token-01';
const READ = 'attempts-test-read-token-002';
const SECRET = 'attempts-test-cluster-secret-3';
const KEY = { accessKeyId: 'ATTEMPTSKEY', secretAccessKey: 'attempts-test-secret' };
const MAX = 5;
/**
 * The window: the bursts below (MAX local requests, then the checks) take milliseconds; 10 s is
 * the margin for a loaded machine. Its end is waited for with a generous bound, never timed.
 */
const WINDOW_S = 10;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request from the given local address (its own connection). */
function send(url: string, from: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers, localAddress: from, agent: false, timeout: 30_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within 30 s`)));
    req.on('error', reject);
    req.end(options.body);
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const code = (a: Answer) => a.headers['x-fanout-error'];

function s3From(endpoint: string, from: string, secretAccessKey: string): S3Client {
  return new S3Client({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: KEY.accessKeyId, secretAccessKey },
    forcePathStyle: true,
    maxAttempts: 1,
    // Options of the SDK's node:http handler: its connections leave from `from`.
    requestHandler: { httpAgent: new Agent({ localAddress: from }) },
  });
}

async function s3Failure(promise: Promise<unknown>): Promise<{ name: string; status: number | undefined; retryAfter: string | undefined }> {
  try {
    await promise;
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number }; $response?: { headers?: Record<string, string> } };
    return { name: e.name, status: e.$metadata?.httpStatusCode, retryAfter: e.$response?.headers?.['retry-after'] };
  }
  assert.fail('expected the request to fail');
}

async function metric(url: string, line: string): Promise<number> {
  const text = (await send(`${url}/metrics`, '127.0.0.1', { headers: bearer(READ) })).body;
  const found = text.split('\n').find((l) => l.startsWith(line + ' '));
  return found === undefined ? 0 : Number(found.slice(line.length + 1));
}

describe('guessed credentials are limited per client address', () => {
  let worker: WorkerProcess;
  let source: string;
  let endpoint: string;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-attempts-src-'));
    await writeFile(join(source, 'f.txt'), 'hello attempts\n');
    const gatewayPort = await freePort();
    worker = await WorkerProcess.start({
      id: 'attempts',
      mounts: { data: source },
      pageSize: '1MiB',
      auth: { tokens: [{ token: ADMIN, role: 'admin' }, { token: READ, role: 'read' }], readToken: true, clusterSecret: SECRET, attempts: { max: MAX, window: `${WINDOW_S}s` } },
      gateway: { listen: `127.0.0.1:${gatewayPort}`, credentials: [KEY] },
    });
    endpoint = `http://127.0.0.1:${gatewayPort}`;
  });
  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
  });

  test('API: wrong bearer tokens get 429 after the limit; the right token from another address works meanwhile; the limit lifts after the window', async () => {
    const data = `${worker.url}/v1/data/data/f.txt`;
    const guesser = '127.0.0.2';
    for (let i = 0; i < MAX; i++) {
      const refused = await send(data, guesser, { headers: bearer(`wrong-token-guess-${i}-0000000`) });
      assert.equal(refused.status, 401, `guess ${i + 1} of ${MAX} is refused as unknown`);
      assert.equal(code(refused), 'UNAUTHENTICATED');
    }
    // Admin routes count too, and are throttled alike.
    const throttled = await send(`${worker.url}/v1/admin/policy`, guesser, { headers: bearer('wrong-token-guess-admin-00000') });
    assert.equal(throttled.status, 429, `past ${MAX} refusals: ${throttled.body}`);
    assert.equal(code(throttled), 'TOO_MANY_ATTEMPTS');
    const retryAfter = Number(throttled.headers['retry-after']);
    assert.ok(retryAfter >= 1 && retryAfter <= WINDOW_S, `Retry-After ${throttled.headers['retry-after']} within the window`);
    // A right token from the throttled address is refused unchecked too: otherwise the answer would still tell a right guess.
    assert.equal((await send(data, guesser, { headers: bearer(READ) })).status, 429);
    // Another address is not slowed: its right tokens work, its own wrong ones are counted for it alone.
    const other = await send(data, '127.0.0.1', { headers: bearer(READ) });
    assert.equal(other.status, 200);
    assert.equal(other.body, 'hello attempts\n');
    assert.equal((await send(`${worker.url}/v1/admin/policy`, '127.0.0.1', { headers: bearer(ADMIN) })).status, 200);
    assert.equal((await send(data, '127.0.0.1', { headers: bearer('another-wrong-token-00000000') })).status, 401);
    assert.ok((await metric(worker.url, 'fanout_auth_throttled_total{server="api"}')) >= 2, 'throttled attempts are counted');
    // The window ends: the guesser's right token opens reads again (waited for, not timed).
    await waitFor('the limit to lift after its window', async () => (await send(data, guesser, { headers: bearer(READ) })).status === 200, WINDOW_S * 1000 + 60_000);
  });

  test('dashboard: wrong tokens at the sign-in form get 429 and the form again after the limit; another address signs in', async () => {
    const login = (from: string, token: string) =>
      send(`${worker.url}/ui/login`, from, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${encodeURIComponent(token)}` });
    const guesser = '127.0.0.3';
    for (let i = 0; i < MAX; i++) assert.equal((await login(guesser, `wrong-form-guess-${i}-00000000`)).status, 401);
    const throttled = await login(guesser, 'wrong-form-guess-last-0000000');
    assert.equal(throttled.status, 429);
    assert.equal(code(throttled), 'TOO_MANY_ATTEMPTS');
    assert.ok(Number(throttled.headers['retry-after']) >= 1);
    assert.match(throttled.body, /Too many refused tokens from this address/);
    assert.equal((await login(guesser, READ)).status, 429, 'the right token from the throttled address is not checked');
    // The /ui?token= link is the same door.
    assert.equal((await send(`${worker.url}/ui?token=${READ}`, guesser)).status, 429);
    const signedIn = await login('127.0.0.1', READ);
    assert.equal(signedIn.status, 303, 'another address signs in');
    assert.match(String(signedIn.headers['set-cookie']), /fanout_token=/);
    assert.ok((await metric(worker.url, 'fanout_auth_throttled_total{server="dashboard"}')) >= 3);
  });

  test('S3 gateway: a wrong-secret SigV4 burst (AWS SDK v3, retries off) gets SlowDown 503 with Retry-After; the right key from another address reads', async () => {
    const guesser = '127.0.0.4';
    const wrong = s3From(endpoint, guesser, 'not-the-secret');
    const right = s3From(endpoint, guesser, KEY.secretAccessKey);
    const elsewhere = s3From(endpoint, '127.0.0.1', KEY.secretAccessKey);
    try {
      for (let i = 0; i < MAX; i++) {
        const refused = await s3Failure(wrong.send(new GetObjectCommand({ Bucket: 'data', Key: 'f.txt' })));
        assert.deepEqual([refused.name, refused.status], ['SignatureDoesNotMatch', 403], `guess ${i + 1}`);
      }
      const throttled = await s3Failure(wrong.send(new GetObjectCommand({ Bucket: 'data', Key: 'f.txt' })));
      assert.deepEqual([throttled.name, throttled.status], ['SlowDown', 503]);
      assert.ok(Number(throttled.retryAfter) >= 1, `Retry-After: ${throttled.retryAfter}`);
      const rightButThrottled = await s3Failure(right.send(new GetObjectCommand({ Bucket: 'data', Key: 'f.txt' })));
      assert.equal(rightButThrottled.name, 'SlowDown', 'the right secret from the throttled address is not checked');
      const read = await elsewhere.send(new GetObjectCommand({ Bucket: 'data', Key: 'f.txt' }));
      assert.equal(await read.Body!.transformToString(), 'hello attempts\n');
      assert.ok((await metric(worker.url, 'fanout_auth_throttled_total{server="gateway"}')) >= 2);
    } finally {
      for (const c of [wrong, right, elsewhere]) c.destroy();
    }
  });
});
