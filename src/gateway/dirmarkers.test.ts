import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import type { DirEntry } from '../core/types.js';
import { S3Error } from './errors.js';
import { EMPTY_ETAG, statMarker } from './dirmarkers.js';
import type { GatewayBackend } from './types.js';

/** A backend whose one mount has the given directories (path → entries); other calls are not used. */
function backend(dirs: Record<string, DirEntry[]>, listError?: FanoutError): GatewayBackend {
  return {
    mountNames: () => ['data'],
    stat: () => Promise.reject(new Error('not used')),
    list: async (_mount, dir) => {
      if (listError) throw listError;
      const entries = dirs[dir];
      if (!entries) throw new FanoutError('NOT_FOUND', `no ${dir}`);
      return entries;
    },
    read: () => {
      throw new Error('not used');
    },
  };
}

const now = Date.UTC(2026, 11, 5, 12, 0, 0);
const noSuchKey = (err: unknown) => err instanceof S3Error && err.code === 'NoSuchKey' && err.status === 404;

describe('directory markers', () => {
  const tree = backend({ '': [{ name: 'models', type: 'dir', mtimeMs: 5000 }, { name: 'a.txt', type: 'file', size: 1 }], models: [{ name: 'empty', type: 'dir' }] });

  test('"dir/" of a directory is a zero-byte object with the empty ETag and the directory\'s time', async () => {
    assert.deepEqual(await statMarker(tree, 'data', 'models/', now), { path: 'models/', size: 0, mtimeMs: 5000, version: EMPTY_ETAG });
    // A source that gives directories no time (S3 prefixes): the request's, never 1970.
    assert.deepEqual(await statMarker(tree, 'data', 'models/empty/', now), { path: 'models/empty/', size: 0, mtimeMs: now, version: EMPTY_ETAG });
  });

  test('a file, a missing name, "/", "a//" and "../" are no directories', async () => {
    for (const key of ['a.txt/', 'missing/', 'models/missing/', 'nope/deeper/', '/', 'models//', '../', 'models/../']) {
      await assert.rejects(statMarker(tree, 'data', key, now), noSuchKey, key);
    }
  });

  test('a source that cannot be listed has no directories; a source failure is no 404', async () => {
    await assert.rejects(statMarker(backend({}, new FanoutError('NOT_LISTABLE', 'HTTP sources cannot be listed')), 'data', 'x/', now), noSuchKey);
    await assert.rejects(statMarker(backend({}, new FanoutError('SOURCE_ERROR', 'source down')), 'data', 'x/', now), (err: unknown) => err instanceof S3Error && err.status >= 500);
  });
});
