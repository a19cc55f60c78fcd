import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { access, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FanoutError } from '../core/errors.js';
import { PageSpool } from '../lib/pagestore/index.js';
import { PageFill } from '../lib/transfer/index.js';
import { FillFile } from './fillfile.js';

/** A source the test feeds chunk by chunk (or fails). */
function feed() {
  const queue: (Buffer | Error | null)[] = [];
  let wake: (() => void) | undefined;
  const push = (item: Buffer | Error | null) => {
    queue.push(item);
    wake?.();
  };
  async function* source(): AsyncGenerator<Buffer> {
    while (true) {
      if (queue.length === 0) await new Promise<void>((r) => (wake = r));
      const item = queue.shift()!;
      if (item === null) return;
      if (item instanceof Error) throw item;
      yield item;
    }
  }
  return { push, source };
}

const settle = () => new Promise((r) => setTimeout(r, 20));

describe('a fill followed through its page file', () => {
  let dir: string;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-fillfile-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function spoolOf(length: number, failWrites = false, unreserve = () => {}): Promise<PageSpool> {
    const tmp = join(dir, `spool-${n++}`);
    const spool = new PageSpool(await open(tmp, 'w+'), tmp, 'k', length, unreserve);
    if (failWrites) spool.append = () => Promise.reject(Object.assign(new Error('no space'), { code: 'ENOSPC' }));
    return spool;
  }

  it('wakes a follower only once the bytes it waits for are on the file, and the file holds what the fill received', async () => {
    const data = randomBytes(1024 * 1024);
    const fill = new PageFill('k', data.length);
    const { push, source } = feed();
    let spool: PageSpool | undefined;
    const file = new FillFile(fill, async () => (spool = await spoolOf(data.length)));
    const follower = file.follow()!;
    const running = fill.run(source());
    let woken = false;
    const step = follower.until(0, 256 * 1024, new AbortController().signal).then((s) => ((woken = true), s));
    push(data.subarray(0, 100_000));
    await settle();
    assert.equal(woken, false, 'not woken for less than it asked');
    push(data.subarray(100_000, 300_000));
    const got = await step;
    assert.equal(got.kind, 'bytes');
    assert.ok(got.kind === 'bytes' && got.end >= 256 * 1024 && got.end <= 300_000);
    push(data.subarray(300_000));
    push(null);
    await running;
    const taken = await file.take();
    assert.equal(taken, spool);
    assert.ok((await readFile(spool!.tmp)).equals(data), 'the file holds the page');
    assert.equal(follower.fd(), spool!.fd);
    follower.close();
    await spool!.settle(true);
  });

  it('a file that cannot be written hands its followers the fill buffer, and takes nothing', async () => {
    const data = randomBytes(512 * 1024);
    const fill = new PageFill('k', data.length);
    const { push, source } = feed();
    const file = new FillFile(fill, () => spoolOf(data.length, true));
    const follower = file.follow()!;
    const running = fill.run(source());
    push(data);
    push(null);
    const step = await follower.until(0, 256 * 1024, new AbortController().signal);
    assert.equal(step.kind, 'broken');
    await running;
    assert.equal(await file.take(), undefined);
    assert.equal(file.followable, false, 'new waiters take the JS path');
    assert.ok(fill.buffer.subarray(0, data.length).equals(data), 'the buffer is still there for the follower');
    follower.close();
  });

  it('a fill that fails fails its followers with its error and removes the temp file', async () => {
    const fill = new PageFill('k', 1024 * 1024);
    const { push, source } = feed();
    let spool: PageSpool | undefined;
    const file = new FillFile(fill, async () => (spool = await spoolOf(1024 * 1024)));
    const follower = file.follow()!;
    const running = fill.run(source());
    push(randomBytes(300_000));
    await follower.until(0, 256 * 1024, new AbortController().signal);
    push(new FanoutError('SOURCE_ERROR', 'cut'));
    await running;
    await assert.rejects(follower.until(300_000, 256 * 1024, new AbortController().signal), (err: FanoutError) => err.code === 'SOURCE_ERROR');
    assert.equal(await file.take(), undefined);
    await settle();
    await assert.rejects(access(spool!.tmp), 'the temp file is gone');
    follower.close();
  });

  it('a fill that fails after its last byte reached the file discards the file it will never commit', async () => {
    // The local source re-checks the version after the last byte; a reader abandoning the fill
    // then, or a peer's trailer, fails it too: the page is never committed, so nobody take()s
    // the spool. It used to stay open (its FileHandle closed by GC), on disk, and reserved.
    const data = randomBytes(512 * 1024);
    const fill = new PageFill('k', data.length);
    const { push, source } = feed();
    let spool: PageSpool | undefined;
    let unreserved = 0;
    const file = new FillFile(fill, async () => (spool = await spoolOf(data.length, false, () => unreserved++)));
    const follower = file.follow()!;
    const running = fill.run(source());
    push(data);
    const step = await follower.until(0, data.length, new AbortController().signal);
    assert.deepEqual(step, { kind: 'bytes', end: data.length }, 'every byte is on the file');
    assert.equal(file.complete, true);
    push(new FanoutError('SOURCE_CHANGED', 'modified while being read'));
    await running;
    assert.equal(fill.done, false);
    await settle();
    await assert.rejects(access(spool!.tmp), 'the temp file is gone');
    assert.equal(unreserved, 1, 'the room set aside for the page is given back');
    assert.equal(await file.take(), undefined, 'nothing left to commit');
    follower.close();
  });
});
