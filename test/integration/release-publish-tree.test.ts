import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { fanout } from '../harness/cli.js';

// Found by a fault hunt: `release publish` took the directory source's listing for the tree, and
// the listing leaves out what it cannot give as a file (a name that is not UTF-8, a dangling
// symlink): the release installed on every host without those files, and nobody was told.
describe('release publish refuses a tree whose listing would leave entries out', () => {
  let etcd: EtcdServer;
  let workers: WorkerProcess[];
  let root: string;
  let source: string;
  let common: string[];

  const publish = async (dir: string, version: string) => {
    const result = await fanout(['release', 'publish', 'idx', `/data/${dir}/`, '--version', version, '--mount', `data=${source}`, '--json', ...common]);
    return { code: result.code, body: JSON.parse(result.stdout.toString()) };
  };
  /** Nothing of the version anywhere: no etcd record, no manifest in the source. */
  const assertNothingPublished = async (version: string) => {
    const show = await fanout(['release', 'show', 'idx', version, '--json', ...common]);
    assert.notEqual(show.code, 0);
    assert.equal(JSON.parse(show.stdout.toString()).error.code, 'RELEASE_NOT_FOUND');
    const manifests = await readdir(join(source, '.fanout-releases/idx')).catch((): string[] => []);
    assert.ok(!manifests.includes(`${version}.json`), `manifest ${version}.json left in the source`);
  };
  const tree = async (dir: string) => {
    await mkdir(join(source, dir, 'shards'), { recursive: true });
    await writeFile(join(source, dir, 'meta.json'), '{"shards":2}');
    await writeFile(join(source, dir, 'shards/0.bin'), randomBytes(70_000));
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-publish-tree-'));
    source = join(root, 'source');
    await mkdir(source);
    etcd = await startEtcd();
    workers = await startCluster(1, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: '1MiB' });
    common = ['--etcd', etcd.endpoint, '--endpoint', workers[0]!.url];
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('a file whose name is not UTF-8 fails with UNPUBLISHABLE_ENTRIES naming it, and nothing is published', async () => {
    await tree('latin1');
    // "caf\xe9.bin": é in Latin-1, as an old tool or an archive from another system writes it.
    writeFileSync(Buffer.concat([Buffer.from(join(source, 'latin1/shards')), Buffer.from([0x2f, 0x63, 0x61, 0x66, 0xe9, 0x2e, 0x62, 0x69, 0x6e])]), 'shard 1');
    const { code, body } = await publish('latin1', 'v1');
    assert.notEqual(code, 0);
    assert.equal(body.error.code, 'UNPUBLISHABLE_ENTRIES');
    assert.match(body.error.message, /\/data\/latin1\/shards\/caf\\xe9\.bin \(name is not UTF-8\)/);
    assert.match(body.error.message, /holds 1 entry/);
    assert.match(body.error.message, /Rename or remove them/);
    await assertNothingPublished('v1');
  });

  test('a dangling symlink fails with UNPUBLISHABLE_ENTRIES naming it, and nothing is published', async () => {
    await tree('dangling');
    await symlink('1.bin.tmp', join(source, 'dangling/shards/1.bin'));
    const { code, body } = await publish('dangling', 'v2');
    assert.notEqual(code, 0);
    assert.equal(body.error.code, 'UNPUBLISHABLE_ENTRIES');
    assert.match(body.error.message, /\/data\/dangling\/shards\/1\.bin \(symlink to nothing\)/);
    await assertNothingPublished('v2');
  });

  test('many such entries: the first ten are named, the rest counted', async () => {
    await tree('many');
    for (let i = 0; i < 13; i++) await symlink(`missing-${i}`, join(source, `many/link-${String(i).padStart(2, '0')}`));
    const { body } = await publish('many', 'v3');
    assert.equal(body.error.code, 'UNPUBLISHABLE_ENTRIES');
    assert.match(body.error.message, /holds 13 entries/);
    assert.match(body.error.message, /link-09 \(symlink to nothing\), and 3 more/);
    assert.doesNotMatch(body.error.message, /link-10/);
    await assertNothingPublished('v3');
  });

  test('a correct tree still publishes, every file in its manifest in code-point order; a sub-directory of a refused tree publishes', async () => {
    await tree('good');
    await writeFile(join(source, 'good/a.txt'), 'a');
    await writeFile(join(source, 'good/café.bin'), 'UTF-8 é');
    await symlink('meta.json', join(source, 'good/meta-link.json'));
    const { code, body } = await publish('good', 'v4');
    assert.equal(code, 0, JSON.stringify(body));
    assert.equal(body.files, 5);
    const manifest = JSON.parse(await readFile(join(source, '.fanout-releases/idx/v4.json'), 'utf8'));
    assert.deepEqual(
      manifest.files.map((f: { path: string }) => f.path),
      ['a.txt', 'café.bin', 'meta-link.json', 'meta.json', 'shards/0.bin'].sort(),
    );
    // The dangling link's sibling directory alone is fine once the link is not in it.
    await rm(join(source, 'dangling/shards/1.bin'));
    assert.equal((await publish('dangling/shards', 'v5')).code, 0);
  });
});
