import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { adminRequestArb, adminToRaw, checkAdminAnswer, type AdminSpec } from './fuzz/admin-api.js';
import { MOUNT, PAGE_SIZE, rssBytes, SECOND_MOUNT, startFixture, type Fixture } from './fuzz/fixture.js';
import { checkS3Answer, s3RequestArb, s3ToRaw, type S3Spec, type S3View } from './fuzz/s3-api.js';
import { checkPaging, pagingArb } from './fuzz/s3-paginate.js';
import { checkRawExchange, exchange, rawBytes, rawSpecArb } from './fuzz/raw.js';
import { describe as describeRequest, Sender, type Outcome, type RawRequest } from './fuzz/send.js';
import { checkWorkerAnswer, toRawRequest, workerRequestArb, type SourceView, type WorkerSpec } from './fuzz/worker-api.js';

/**
 * Property-based fuzzing of every API of a real worker process: the worker HTTP API (pages,
 * ranges, stat, list, health), the admin API, and the S3 gateway. Whatever is asked: an answer
 * comes (no hang, no crash), no undocumented 5xx (a 500 is always a bug), every error carries a
 * stable code, and successful reads return exactly the bytes of the range asked.
 *
 *   FANOUT_FUZZ_SEED=N   replay a run (the seed is printed at the start and in every failure)
 *   FANOUT_FUZZ_RUNS=N   generated requests in total (default 6000), split between the APIs
 */
const SEED = process.env.FANOUT_FUZZ_SEED ? Number(process.env.FANOUT_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const TOTAL = process.env.FANOUT_FUZZ_RUNS ? Number(process.env.FANOUT_FUZZ_RUNS) : 6000;
/** Requests of one property run are sent at once: concurrency is part of what is fuzzed. */
const BATCH = { minLength: 1, maxLength: 6 };
const AVERAGE_BATCH = 3.5;
const RSS_BOUND = 500 * 1024 * 1024;

console.log(`fuzz: FANOUT_FUZZ_SEED=${SEED} FANOUT_FUZZ_RUNS=${TOTAL}`);

/** Runs a property with the run's seed; a failure names the seed and the shrunk request. */
async function runProperty<T>(name: string, arb: fc.Arbitrary<T>, runs: number, check: (value: T) => Promise<void>): Promise<void> {
  const details = await fc.check(fc.asyncProperty(arb, check), { seed: SEED, numRuns: Math.max(1, Math.round(runs)) });
  if (details.failed) {
    assert.fail(`${name} failed; replay with FANOUT_FUZZ_SEED=${SEED} FANOUT_FUZZ_RUNS=${TOTAL}\n${fc.defaultReportMessage(details)}`);
  }
}

describe('every API of a real worker under generated requests', () => {
  let fx: Fixture;
  let worker: Sender;
  let s3: Sender;
  let view: SourceView;
  let s3View: S3View;
  let rssBefore = 0;
  const statuses = new Map<string, number>();
  const serverErrors = new Set<string>();

  /** Sends a batch at once and checks each answer; throws a description of the first wrong one. */
  async function sendBatch<S>(sender: Sender, specs: S[], toRaw: (s: S) => RawRequest, check: (s: S, o: Outcome) => string | undefined, family: string): Promise<void> {
    const raws = specs.map(toRaw);
    const outcomes = await Promise.all(raws.map((raw) => sender.send(raw)));
    for (const [i, outcome] of outcomes.entries()) {
      const label = `${family} ${outcome.kind === 'response' ? outcome.status : outcome.kind}`;
      statuses.set(label, (statuses.get(label) ?? 0) + 1);
      if (outcome.kind === 'response' && outcome.status >= 500 && outcome.status !== 501 && serverErrors.size < 20) {
        // Documented 5xx are allowed, but worth seeing: which code, for which request.
        const code = outcome.headers['x-fanout-error'] ?? /<Code>([^<]*)</.exec(outcome.body.toString())?.[1];
        serverErrors.add(`${family} ${outcome.status} ${String(code)}: ${raws[i]!.method} ${raws[i]!.target.slice(0, 160)}`);
      }
      const problem = check(specs[i]!, outcome);
      if (problem) throw new Error(`${problem}\n  request: ${describeRequest(raws[i]!)}`);
    }
    if (!fx.worker.running) throw new Error(`the worker process exited (see ${fx.worker.dir}/worker.log)`);
  }

  before(async () => {
    fx = await startFixture();
    worker = new Sender(fx.worker.url);
    s3 = new Sender(fx.s3Url);
    for (const [mount, files] of fx.files) {
      for (const file of files.values()) {
        const res = await fetch(`${fx.worker.url}/v1/stat/${mount}/${file.path.split('/').map(encodeURIComponent).join('/')}`);
        assert.equal(res.status, 200, `stat ${mount}/${file.path}`);
        file.version = ((await res.json()) as { version: string }).version;
      }
    }
    view = { mounts: [MOUNT, SECOND_MOUNT], files: fx.files };
    s3View = { buckets: [MOUNT, SECOND_MOUNT], files: fx.files, extraDirs: new Map([[MOUNT, ['empty-dir/']]]), host: new URL(fx.s3Url).host };
    rssBefore = await rssBytes(fx.worker.pid!);
  });

  after(async () => {
    worker?.close();
    s3?.close();
    await fx?.cleanup();
  });

  test('the worker API answers every request with a documented status, a stable error code and the right bytes', async () => {
    await runProperty('worker API', fc.array(workerRequestArb(view), BATCH), (TOTAL * 0.5) / AVERAGE_BATCH, (specs: WorkerSpec[]) =>
      sendBatch(worker, specs, toRawRequest, (spec, outcome) => checkWorkerAnswer(view, spec, outcome), 'worker'),
    );
  });

  test('the admin API answers any body (wrong types, deep nesting, large, not JSON) with a stable error code', async () => {
    const files = [...fx.files.get(MOUNT)!.values()];
    await runProperty('admin API', fc.array(adminRequestArb(files), BATCH), (TOTAL * 0.1) / AVERAGE_BATCH, (specs: AdminSpec[]) =>
      sendBatch(worker, specs, adminToRaw, (spec, outcome) => checkAdminAnswer(spec, outcome), 'admin'),
    );
  });

  test('the S3 gateway answers signed and unsigned requests with S3 error codes, right bytes and consistent listings', async () => {
    await runProperty('S3 gateway', fc.array(s3RequestArb(s3View), BATCH), (TOTAL * 0.35) / AVERAGE_BATCH, (specs: S3Spec[]) =>
      sendBatch(s3, specs, (spec) => s3ToRaw(s3View, spec), (spec, outcome) => checkS3Answer(s3View, spec, outcome), 's3'),
    );
  });

  test('S3 listings paged with small max-keys (tokens, markers) equal the unpaged listing', async () => {
    await runProperty('S3 paging', pagingArb(s3View), TOTAL * 0.01, async (spec) => {
      const problem = await checkPaging(s3View, s3, spec);
      if (problem) throw new Error(problem);
    });
  });

  test('malformed bytes on the wire (request lines, framing, headers) get a status line with a stable code, or a close', async () => {
    const arb = fc.array(fc.tuple(rawSpecArb, fc.boolean()), { minLength: 1, maxLength: 8 });
    await runProperty('raw HTTP', arb, (TOTAL * 0.02) / 4.5, async (batch) => {
      const answers = await Promise.all(batch.map(([spec, toS3]) => exchange(toS3 ? fx.s3Url : fx.worker.url, rawBytes(spec), 250)));
      for (const [i, answer] of answers.entries()) {
        statuses.set(`raw ${answer.text.slice(9, 12) || 'closed'}`, (statuses.get(`raw ${answer.text.slice(9, 12) || 'closed'}`) ?? 0) + 1);
        const problem = checkRawExchange(answer.text);
        if (problem) throw new Error(`${problem}\n  sent: ${JSON.stringify(rawBytes(batch[i]![0]).slice(0, 400))}`);
      }
      if (!fx.worker.running) throw new Error(`the worker process exited (see ${fx.worker.dir}/worker.log)`);
    });
  });

  test('after the run the worker is alive, healthy, and its memory is bounded', async () => {
    const answered = worker.answered + s3.answered;
    console.log(`fuzz: ${answered} requests answered (worker API ${worker.answered}, S3 ${s3.answered})`);
    console.log(`fuzz: statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`);
    for (const line of serverErrors) console.log(`fuzz: documented 5xx seen: ${line}`);
    assert.ok(fx.worker.running, 'the worker process is running');
    const health = await fetch(`${fx.worker.url}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { ok: boolean }).ok, true);
    const rssAfter = await rssBytes(fx.worker.pid!);
    console.log(`fuzz: worker RSS before ${(rssBefore / 2 ** 20).toFixed(1)} MiB, after ${(rssAfter / 2 ** 20).toFixed(1)} MiB (page size ${PAGE_SIZE / 2 ** 20} MiB)`);
    assert.ok(rssAfter < RSS_BOUND, `worker RSS ${rssAfter} bytes is over ${RSS_BOUND}`);
    if (!process.env.FANOUT_FUZZ_RUNS) assert.ok(answered >= 5000, `only ${answered} requests were answered`);
  });
});
