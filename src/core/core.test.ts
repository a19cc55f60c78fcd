import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorFromJSON, FanoutError, outOfDescriptors } from './errors.js';
import { decodeUrlPath, parseFanoutPath } from './paths.js';
import { MiB, pageCount, pageSlice, pageSpan, pagesForRange, parseSize } from './pages.js';

test('page arithmetic covers a file exactly once', () => {
  const pageSize = 4 * MiB;
  assert.equal(pageCount(0, pageSize), 0);
  assert.equal(pageCount(1, pageSize), 1);
  assert.equal(pageCount(pageSize, pageSize), 1);
  assert.equal(pageCount(pageSize + 1, pageSize), 2);
  const size = 3 * pageSize + 123;
  let covered = 0;
  for (let i = 0; i < pageCount(size, pageSize); i++) {
    const { start, end } = pageSpan(i, size, pageSize);
    assert.equal(start, covered);
    covered = end;
  }
  assert.equal(covered, size);
  assert.throws(() => pageSpan(4, size, pageSize), (e: FanoutError) => e.code === 'RANGE_NOT_SATISFIABLE');
  assert.throws(() => pageSpan(-1, size, pageSize), (e: FanoutError) => e.code === 'RANGE_NOT_SATISFIABLE');
});

test('pageSlice gives the part of a page a byte range covers, as offsets in the page', () => {
  assert.deepEqual(pageSlice(0, 3, 10, 4), { from: 3, to: 4 });
  assert.deepEqual(pageSlice(1, 3, 10, 4), { from: 0, to: 4 });
  assert.deepEqual(pageSlice(2, 3, 10, 4), { from: 0, to: 2 });
});

test('pagesForRange picks the pages that hold a byte range', () => {
  assert.deepEqual(pagesForRange(0, 10, 4), { first: 0, last: 2 });
  assert.deepEqual(pagesForRange(4, 8, 4), { first: 1, last: 1 });
  assert.deepEqual(pagesForRange(3, 5, 4), { first: 0, last: 1 });
  assert.deepEqual(pagesForRange(5, 5, 4), { first: 0, last: -1 });
});

test('sizes parse with binary and decimal units', () => {
  assert.equal(parseSize('4MiB'), 4 * MiB);
  assert.equal(parseSize('350MB/s'), 350e6);
  assert.equal(parseSize('10GiB'), 10 * 1024 * MiB);
  assert.equal(parseSize('1048576'), MiB);
  assert.equal(parseSize(12), 12);
  assert.throws(() => parseSize('ten'), (e: FanoutError) => e.code === 'INVALID_ARGUMENT');
  assert.throws(() => parseSize('5 parsecs'), (e: FanoutError) => e.code === 'INVALID_ARGUMENT');
});

test('paths split into mount and path', () => {
  assert.deepEqual(parseFanoutPath('/data/models/a.bin'), { mount: 'data', path: 'models/a.bin' });
  assert.deepEqual(parseFanoutPath('/data/'), { mount: 'data', path: '' });
  assert.deepEqual(parseFanoutPath('/'), { mount: '', path: '' });
});

test('paths that could escape a mount are rejected with INVALID_PATH', () => {
  const bad = ['/data/../etc/passwd', '/data/./a', '/data//a', '/data/a\\..\\b', '/data/a\u0000b', '/../x', '/Data/x', ''];
  for (const raw of bad) {
    assert.throws(() => parseFanoutPath(raw), (e: FanoutError) => e.code === 'INVALID_PATH', raw);
  }
  // Encoded variants arrive decoded at the edge and are then rejected the same way.
  assert.throws(() => parseFanoutPath(decodeUrlPath('/data/%2e%2e/secret')), (e: FanoutError) => e.code === 'INVALID_PATH');
  assert.throws(() => parseFanoutPath(decodeUrlPath('/data/a%2f..%2f..%2fb')), (e: FanoutError) => e.code === 'INVALID_PATH');
  assert.throws(() => decodeUrlPath('/data/%zz'), (e: FanoutError) => e.code === 'INVALID_PATH');
});

test('an error answer keeps the worker\'s code; one without a fanout code is an unavailable worker, whatever its status', () => {
  assert.equal(errorFromJSON({ error: { code: 'NOT_FOUND', message: 'gone' } }, 404).code, 'NOT_FOUND');
  assert.equal(errorFromJSON({ error: { code: 'SOURCE_CHANGED', message: 'moved' } }, 412).code, 'SOURCE_CHANGED');
  for (const status of [302, 400, 404, 500, 503]) {
    const err = errorFromJSON(undefined, status);
    assert.equal(err.code, 'WORKER_UNAVAILABLE', `HTTP ${status} without a body`);
    assert.match(err.message, new RegExp(`HTTP ${status}`));
  }
  assert.equal(errorFromJSON({ error: { code: 'NO_SUCH_CODE', message: 'x' } }, 404).code, 'WORKER_UNAVAILABLE');
});

test('out of descriptors is one message for every process: who, its limit when known, and what comes next', () => {
  const emfile = Object.assign(new Error('EMFILE: too many open files, scandir /srv/app'), { code: 'EMFILE' });
  const enfile = Object.assign(new Error('ENFILE: file table overflow'), { code: 'ENFILE' });
  assert.equal(outOfDescriptors(new Error('other'), 'x'), undefined);
  const worker = outOfDescriptors(new Error('fetch failed', { cause: emfile }), 'page store open')!;
  assert.equal(worker.code, 'OVERLOADED');
  assert.equal(worker.message, 'page store open: this worker has no file descriptor left (EMFILE: its open-file limit, ulimit -n or LimitNOFILE, is reached); retry shortly');
  const agent = outOfDescriptors(emfile, '', { who: 'this sync agent', limit: 40, then: `the round is tried again (${emfile.message})` })!;
  assert.equal(agent.message, 'this sync agent has no file descriptor left (EMFILE: its open-file limit, ulimit -n or LimitNOFILE, is 40); the round is tried again (EMFILE: too many open files, scandir /srv/app)');
  const host = outOfDescriptors(enfile, '', { who: 'this sync agent', limit: 40, then: 'the round is tried again' })!;
  assert.equal(host.message, "the host has no file descriptor left (ENFILE: the system's open-file table is full); the round is tried again");
});
