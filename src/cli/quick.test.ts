import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseQuick } from './quick.js';

const argv = (...args: string[]) => ['node', 'fanout', ...args];

test('cat and stat with the options main() gives them are parsed with the same defaults and environment', () => {
  assert.deepEqual(parseQuick(argv('cat', '/data/a'), {}), { command: 'cat', path: '/data/a', options: { endpoint: 'http://127.0.0.1:7450', hedge: 'auto' } });
  assert.deepEqual(parseQuick(argv('stat', '/data/a', '--json'), { FANOUT_ENDPOINT: 'http://w:1', FANOUT_CA: '/ca.pem' }), {
    command: 'stat',
    path: '/data/a',
    options: { endpoint: 'http://w:1', ca: '/ca.pem', json: true },
  });
  assert.deepEqual(parseQuick(argv('cat', '--endpoint=http://x:2', '/data/a', '--range', '0-9', '--hedge', '200ms', '--ca', 'c.pem'), { FANOUT_ENDPOINT: 'http://w:1' }), {
    command: 'cat',
    path: '/data/a',
    options: { endpoint: 'http://x:2', ca: 'c.pem', hedge: 200, range: '0-9' },
  });
  assert.equal(parseQuick(argv('cat', '/data/a', '--range=-5'), {})?.options.range, '-5');
  assert.equal(parseQuick(argv('cat', '-', '--hedge', 'off'), {})?.path, '-');
});

test('cp takes its source, its destination and the options main() gives it, with the same defaults', () => {
  assert.deepEqual(parseQuick(argv('cp', '/data/a', 'out'), {}), {
    command: 'cp',
    path: '/data/a',
    dest: 'out',
    options: { endpoint: 'http://127.0.0.1:7450', hedge: 'auto', progress: true },
  });
  assert.deepEqual(parseQuick(argv('cp', '--no-progress', '/data/dir/', '--json', '.', '--hedge=off', '--endpoint', 'http://x:2'), { FANOUT_CA: '/ca.pem' }), {
    command: 'cp',
    path: '/data/dir/',
    dest: '.',
    options: { endpoint: 'http://x:2', ca: '/ca.pem', hedge: 'off', json: true, progress: false },
  });
  assert.equal(parseQuick(argv('cp', '/data/a', '-'), {})?.dest, '-');
});

test('ls takes a path and the options main() gives it', () => {
  assert.deepEqual(parseQuick(argv('ls', '/'), {}), { command: 'ls', path: '/', options: { endpoint: 'http://127.0.0.1:7450' } });
  assert.deepEqual(parseQuick(argv('ls', '--json', '/data/models/', '--ca=c.pem'), { FANOUT_ENDPOINT: 'http://w:1' }), {
    command: 'ls',
    path: '/data/models/',
    options: { endpoint: 'http://w:1', ca: 'c.pem', json: true },
  });
});

test('anything the quick parser does not fully understand is left to the full command line', () => {
  const env = {};
  for (const args of [
    [],
    ['ls'],
    ['toString', '/a'],
    ['constructor', '/a'],
    ['ls', '/', '/data'],
    ['ls', '/', '--hedge', 'off'],
    ['cp', '/data/a'],
    ['cp', '/data/a', 'b', 'c'],
    ['cp', '/data/a', 'b', '--range', '0-1'],
    ['cp', '/data/a', 'b', '--no-progress=yes'],
    ['cp', '/data/a', 'b', '--progress'],
    ['cp', '-r', '/data/a', 'b'],
    ['cat'],
    ['cat', '/a', '/b'],
    ['cat', '--help'],
    ['cat', '-h', '/a'],
    ['cat', '/a', '--hedge', 'bogus'],
    ['cat', '/a', '--range'],
    ['cat', '/a', '--no-such-option'],
    ['stat', '/a', '--range', '0-1'],
    ['stat', '/a', '--hedge', 'off'],
    ['cat', '--', '/a'],
    ['cat', '/a', '--json=yes'],
    ['--endpoint', 'http://x', 'cat', '/a'],
  ]) {
    assert.equal(parseQuick(argv(...args), env), undefined, args.join(' '));
  }
});
