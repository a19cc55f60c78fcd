import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { freePort } from '../../harness/ports.js';
import { WorkerProcess } from '../../harness/workers.js';

export const MiB = 1024 * 1024;
export const PAGE_SIZE = MiB;
export const MOUNT = 'data';
/** A second mount over a sub-directory of the first, so bucket and mount names vary. */
export const SECOND_MOUNT = 'more.x-1';
export const S3_KEY = { accessKeyId: 'FUZZKEY', secretAccessKey: 'fuzz-secret/with+chars=' };
/**
 * The admin token the worker API is called with once the worker checks tokens (the auth work of
 * issue 9): the fixture's config names it, and workerHeaders (worker-api.ts) sends it.
 */
export const ADMIN_TOKEN = 'fuzz-admin-token-0123456789abcdef';

/** What the source holds, so answers can be checked byte for byte. */
export interface SourceFile {
  /** Path inside the mount, "/"-separated, unencoded. */
  path: string;
  data: Buffer;
  /** The source version the worker reports (from /v1/stat once it runs). */
  version: string;
}

/**
 * Files of every kind the APIs must handle: tiny, empty, exactly one page, several pages with a
 * partial last page, nested, and names with spaces, unicode, "+", "&", "%" and quotes.
 */
function sourceTree(): Record<string, Buffer> {
  return {
    'hello.txt': Buffer.from('hello fanout\n'),
    'empty.bin': Buffer.alloc(0),
    'one-page.bin': randomBytes(PAGE_SIZE),
    'multi.bin': randomBytes(2 * PAGE_SIZE + PAGE_SIZE / 2 + 17),
    'nested/a/b/deep.txt': Buffer.from('deep\n'),
    'nested/a/sibling.bin': randomBytes(4097),
    'nested/z.txt': Buffer.from('z'),
    'with space.txt': Buffer.from('spaces\n'),
    'unicodé ✓ 😀.txt': Buffer.from('unicode name\n'),
    'plus+and&amp%25.txt': Buffer.from('odd characters\n'),
    "quote'd \"name\".txt": Buffer.from('quotes\n'),
    'dir with space/inner file.txt': randomBytes(3000),
  };
}

export interface Fixture {
  worker: WorkerProcess;
  /** http://127.0.0.1:PORT of the S3 gateway. */
  s3Url: string;
  /** mount → path → file. */
  files: Map<string, Map<string, SourceFile>>;
  cleanup(): Promise<void>;
}

export async function startFixture(): Promise<Fixture> {
  const root = await mkdtemp(join(tmpdir(), 'fanout-fuzz-src-'));
  const tree = sourceTree();
  for (const [path, data] of Object.entries(tree)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), data);
  }
  await mkdir(join(root, 'empty-dir'));
  const s3Port = await freePort();
  const worker = await WorkerProcess.start({
    id: 'fuzz',
    pageSize: '1MiB',
    capacity: '256MiB',
    mounts: { [MOUNT]: `file://${root}`, [SECOND_MOUNT]: `file://${join(root, 'nested')}` },
    gateway: { listen: `127.0.0.1:${s3Port}`, credentials: [S3_KEY] },
    // Guessed-credential limits off: the generated garbage tokens and signatures would soon have
    // the fuzzer's address throttled, and every signed request after them answered unchecked.
    auth: { tokens: [{ token: ADMIN_TOKEN, role: 'admin' }], clusterSecret: 'fuzz-cluster-secret-0123456789', attempts: { max: 0 } },
  });
  const files = new Map<string, Map<string, SourceFile>>();
  for (const [mount, dir] of [
    [MOUNT, ''],
    [SECOND_MOUNT, 'nested/'],
  ] as const) {
    const byPath = new Map<string, SourceFile>();
    for (const path of Object.keys(tree)) {
      if (!path.startsWith(dir)) continue;
      const inMount = path.slice(dir.length);
      const data = await readFile(join(root, path));
      byPath.set(inMount, { path: inMount, data, version: '' });
    }
    files.set(mount, byPath);
  }
  return {
    worker,
    s3Url: `http://127.0.0.1:${s3Port}`,
    files,
    async cleanup() {
      await worker.destroy();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** Resident memory of a process in bytes, from /proc (Linux). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb) * 1024;
}
