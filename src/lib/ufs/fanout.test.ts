import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import { FanoutError, isFanoutError } from '../../core/errors.js';
import type { DirEntry, FileInfo } from '../../core/types.js';
import type { ClusterInfo } from '../../client/index.js';
import { FanoutUfs, parseFanoutUri } from './fanout.js';
import type { RemoteCluster } from './fanout-client.js';
import { openUfs } from './index.js';

const PAGE = 16;

/** A remote cluster in memory: one file, its pages cut at PAGE bytes, and a log of the pages asked for. */
class FakeRemote implements RemoteCluster {
  readonly asked: { path: string; index: number; hash?: string }[] = [];
  failWith: FanoutError | Error | undefined;
  info_: ClusterInfo = { self: 'r1', pageSize: PAGE, replication: 1, statTtlMs: 2000, members: [], stale: false, mounts: ['models'], clusterId: 'remote', upstream: ['far'] };
  /** The answer info() gives unless forced, as a session's cache (undefined: the current one). */
  cached: ClusterInfo | undefined;
  /** Runs after each page served (a test changes the remote there). */
  afterPage: (() => void) | undefined;
  constructor(readonly data: Buffer, readonly version = 'v1') {}
  async info(force = false): Promise<ClusterInfo> {
    if (this.failWith) throw this.failWith;
    if (force) this.cached = undefined;
    return this.cached ?? this.info_;
  }
  async stat(path: string): Promise<FileInfo> {
    if (this.failWith) throw this.failWith;
    if (path !== '/models/pre/f.bin') throw new FanoutError('NOT_FOUND', `${path} not found`);
    return { path: 'pre/f.bin', size: this.data.length, mtimeMs: 5, version: this.version };
  }
  async list(path: string): Promise<DirEntry[]> {
    assert.equal(path, '/models/pre');
    return [{ name: 'f.bin', type: 'file', size: this.data.length }];
  }
  async page(mount: string, file: FileInfo, index: number, hash: string | undefined, pageSize: number): Promise<Buffer[]> {
    if (this.failWith) throw this.failWith;
    assert.equal(mount, 'models');
    this.asked.push({ path: file.path, index, ...(hash ? { hash } : {}) });
    if (pageSize !== this.info_.pageSize) throw new FanoutError('PAGE_SIZE_MISMATCH', `this worker's pages are ${this.info_.pageSize} bytes, the request counts pages of ${pageSize}`);
    if (file.version !== this.version) throw new FanoutError('SOURCE_CHANGED', 'gone');
    const page = this.data.subarray(index * pageSize, (index + 1) * pageSize);
    this.afterPage?.();
    return [page.subarray(0, 5), page.subarray(5)]; // chunked, as the transport hands them over
  }
  async close(): Promise<void> {}
}

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

const data = Buffer.from(Array.from({ length: 40 }, (_, i) => i));
const ufsOver = (remote: FakeRemote, cluster = { clusterId: 'local', pageSize: PAGE }) =>
  new FanoutUfs('fanout://10.0.0.1:7450/models/pre', { label: '/data', cluster }, remote);

describe('fanout:// sources', () => {
  test('the URI names workers, a mount and an optional prefix; fanouts:// is https', () => {
    assert.deepEqual(parseFanoutUri('fanout://10.0.0.1:7450,dc-a-2:7450/models/llm/v1/'), {
      endpoints: ['http://10.0.0.1:7450', 'http://dc-a-2:7450'],
      mount: 'models',
      prefix: 'llm/v1',
    });
    assert.deepEqual(parseFanoutUri('fanouts://[::1]:7450/m'), { endpoints: ['https://[::1]:7450'], mount: 'm', prefix: '' });
    assert.ok(openUfs('fanout://127.0.0.1:1/m') instanceof FanoutUfs);
    for (const bad of ['fanout://host/m', 'fanout://h:1', 'fanout://h:1/', 'fanout://h:1,/m', 'fanout://h:1/m/../x']) {
      assert.throws(() => parseFanoutUri(bad), (err) => isFanoutError(err, 'INVALID_CONFIG'), bad);
    }
  });

  test('stat and list go to the remote mount under the prefix and keep the remote version', async () => {
    const ufs = ufsOver(new FakeRemote(data, 'etag-7'));
    assert.deepEqual(await ufs.stat('f.bin'), { path: 'f.bin', size: 40, mtimeMs: 5, version: 'etag-7' });
    assert.deepEqual(await ufs.list(''), [{ name: 'f.bin', type: 'file', size: 40, mtimeMs: undefined, version: undefined }]);
    await assert.rejects(ufs.stat('missing'), (err) => isFanoutError(err, 'NOT_FOUND'));
  });

  test('a whole page is asked for as that page of the remote, by content hash when it has one', async () => {
    const remote = new FakeRemote(data);
    const ufs = ufsOver(remote);
    const ref = { mount: 'data', path: 'f.bin', version: 'v1', size: 40, index: 1, hash: 'ab'.repeat(32) };
    assert.deepEqual(await collect(ufs.readPage(ref, PAGE)), data.subarray(16, 32));
    assert.deepEqual(remote.asked, [{ path: 'pre/f.bin', index: 1, hash: 'ab'.repeat(32) }]);
  });

  test('a range is cut from the remote pages that hold it, each asked for whole', async () => {
    const remote = new FakeRemote(data);
    const ufs = ufsOver(remote);
    await ufs.stat('f.bin');
    assert.deepEqual(await collect(ufs.read('f.bin', 'v1', 10, 25)), data.subarray(10, 35));
    assert.deepEqual(remote.asked.map((p) => p.index), [0, 1, 2]);
    // A remote whose page size differs from this cluster's is still read right, by range.
    remote.info_ = { ...remote.info_, pageSize: 8 };
    const page = await collect(ufs.readPage({ mount: 'data', path: 'f.bin', version: 'v1', size: 40, index: 1 }, PAGE));
    assert.equal(crc32(page), crc32(data.subarray(16, 32)));
  });

  test('a remote whose page size changes during a range read: the read goes on from its byte in the new pages', async () => {
    const remote = new FakeRemote(data);
    const ufs = ufsOver(remote);
    await ufs.stat('f.bin');
    // After the first page the remote's workers restart with pages of 32; the cached answer still says 16.
    remote.afterPage = () => {
      remote.cached = remote.info_;
      remote.info_ = { ...remote.info_, pageSize: 2 * PAGE };
      remote.afterPage = undefined;
    };
    assert.deepEqual(await collect(ufs.read('f.bin', 'v1', 10, 25)), data.subarray(10, 35));
    // Page 0 of 16, page 1 of 16 refused, then from byte 16 on in pages of 32: page 0 (its bytes 16–31) and page 1.
    assert.deepEqual(remote.asked.map((p) => p.index), [0, 1, 0, 1]);
  });

  test("a whole page asked for in this cluster's size, refused once the remote's changed, is read by range in the remote's new pages", async () => {
    const remote = new FakeRemote(data);
    const ufs = ufsOver(remote);
    remote.cached = remote.info_;
    remote.info_ = { ...remote.info_, pageSize: 2 * PAGE };
    const ref = { mount: 'data', path: 'f.bin', version: 'v1', size: 40, index: 2, hash: 'ab'.repeat(32) };
    assert.deepEqual(await collect(ufs.readPage(ref, PAGE)), data.subarray(32, 40));
    // Asked by content in 16 (refused), then page 1 of 32, by range (no hash: it is another page).
    assert.deepEqual(remote.asked, [{ path: 'pre/f.bin', index: 2, hash: 'ab'.repeat(32) }, { path: 'pre/f.bin', index: 1 }]);
  });

  test('a page refused for its size while the remote still says that size fails with the refusal', async () => {
    const remote = new FakeRemote(data);
    const ufs = ufsOver(remote);
    remote.info_ = { ...remote.info_, pageSize: 2 * PAGE };
    remote.cached = { ...remote.info_, pageSize: PAGE };
    // The cached answer says 16, the page is asked in 16 and refused; asked again, the remote says 32: followed.
    assert.deepEqual(await collect(ufs.read('f.bin', 'v1', 0, 8)), data.subarray(0, 8));
    // A remote of two sizes at once (its fresh answer says 16 but its workers refuse 16) is not followed.
    remote.info = async () => ({ ...remote.info_, pageSize: PAGE });
    await assert.rejects(collect(ufs.read('f.bin', 'v1', 0, 8)), (err) => isFanoutError(err, 'SOURCE_ERROR') && /PAGE_SIZE_MISMATCH|pages are 32/.test((err as Error).message));
  });

  test('a version the remote no longer has fails SOURCE_CHANGED', async () => {
    const ufs = ufsOver(new FakeRemote(data, 'v2'));
    await assert.rejects(collect(ufs.read('f.bin', 'v1', 0, 16)), (err) => isFanoutError(err, 'SOURCE_CHANGED'));
    await assert.rejects(collect(ufs.readPage({ mount: 'data', path: 'f.bin', version: 'v1', size: 40, index: 0 }, PAGE)), (err) => isFanoutError(err, 'SOURCE_CHANGED'));
  });

  test('an unreachable remote is SOURCE_ERROR naming the file and the remote, not WORKER_UNAVAILABLE', async () => {
    const remote = new FakeRemote(data);
    remote.failWith = new FanoutError('WORKER_UNAVAILABLE', 'cannot reach fanout at http://10.0.0.1:7450: connect ECONNREFUSED');
    const ufs = ufsOver(remote);
    await assert.rejects(ufs.stat('f.bin'), (err) => isFanoutError(err, 'SOURCE_ERROR') && /\/data\/f\.bin/.test(err.message) && /ECONNREFUSED/.test(err.message));
    await assert.rejects(collect(ufs.readPage({ mount: 'data', path: 'f.bin', version: 'v1', size: 40, index: 0 }, PAGE)), (err) => isFanoutError(err, 'SOURCE_ERROR'));
  });

  test('a remote that is this cluster, or reads it down a chain, is refused as a loop', async () => {
    const direct = new FakeRemote(data);
    direct.info_ = { ...direct.info_, clusterId: 'local', upstream: [] };
    await assert.rejects(ufsOver(direct).checkRemote(), (err) => isFanoutError(err, 'INVALID_CONFIG') && /loop: it is this cluster/.test(err.message));
    const chain = new FakeRemote(data);
    chain.info_ = { ...chain.info_, upstream: ['far', 'local'] };
    const ufs = ufsOver(chain);
    await assert.rejects(ufs.checkRemote(), (err) => isFanoutError(err, 'INVALID_CONFIG') && /reads this cluster through its own sources/.test(err.message));
    // Reads check too: a loop closed after start fails them instead of circling.
    await assert.rejects(ufs.stat('f.bin'), (err) => isFanoutError(err, 'INVALID_CONFIG'));
    assert.deepEqual(await ufsOver(new FakeRemote(data)).checkRemote(), ['remote', 'far']);
  });

  test('a remote without the mount, or with another page size, is refused at start naming both sizes', async () => {
    const noMount = new FakeRemote(data);
    noMount.info_ = { ...noMount.info_, mounts: ['other'] };
    await assert.rejects(ufsOver(noMount).checkRemote(), (err) => isFanoutError(err, 'INVALID_CONFIG') && /no mount "models"/.test(err.message));
    const sized = new FakeRemote(data);
    sized.info_ = { ...sized.info_, pageSize: 32 };
    await assert.rejects(ufsOver(sized).checkRemote(), (err) => isFanoutError(err, 'INVALID_CONFIG') && /32 bytes.*16/.test(err.message));
  });
});
