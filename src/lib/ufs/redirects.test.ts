import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RedirectMemory, redirectLifetime } from './redirects.js';

test('a redirect is reused as long as HTTP lets a private cache reuse it', () => {
  const now = Date.parse('2026-12-06T12:00:00Z');
  assert.equal(redirectLifetime(301, {}, now), Infinity);
  assert.equal(redirectLifetime(308, {}, now), Infinity);
  for (const status of [302, 303, 307]) assert.equal(redirectLifetime(status, {}, now), 0, String(status));
  assert.equal(redirectLifetime(302, { 'cache-control': 'private, max-age=60' }, now), 60_000);
  assert.equal(redirectLifetime(301, { 'cache-control': 'max-age=0' }, now), 0);
  assert.equal(redirectLifetime(301, { 'cache-control': 'no-store' }, now), 0);
  assert.equal(redirectLifetime(308, { 'cache-control': 'No-Cache' }, now), 0);
  assert.equal(redirectLifetime(302, { 'cache-control': 'max-age=abc' }, now), 0);
  assert.equal(redirectLifetime(307, { expires: 'Sun, 06 Dec 2026 12:05:00 GMT', date: 'Sun, 06 Dec 2026 12:00:00 GMT' }, now), 300_000);
  // Expires counted from the answer's Date, else from now; an invalid one ("0") is already expired.
  assert.equal(redirectLifetime(307, { expires: 'Sun, 06 Dec 2026 12:01:00 GMT' }, now), 60_000);
  assert.equal(redirectLifetime(301, { expires: '0' }, now), 0);
  // max-age wins over Expires (RFC 9111 5.3).
  assert.equal(redirectLifetime(302, { 'cache-control': 'max-age=10', expires: 'Sun, 06 Dec 2026 13:00:00 GMT' }, now), 10_000);
});

test('a remembered target serves its file at its version until it expires or is forgotten', () => {
  let clock = 1_000;
  const memory = new RedirectMemory(3, () => clock);
  const target = new URL('https://cdn.example/a.bin?sig=1');
  memory.remember('a.bin', 'v1', target, 60_000);
  assert.equal(memory.target('a.bin', 'v1')?.href, target.href);
  assert.equal(memory.target('a.bin', 'v2'), undefined, 'another version: not this target');
  assert.equal(memory.target('a.bin', 'v1'), undefined, 'and it is dropped');
  memory.remember('a.bin', 'v1', target, 60_000);
  clock += 60_000;
  assert.equal(memory.target('a.bin', 'v1'), undefined, 'expired');
  memory.remember('p.bin', 'v', target, Infinity);
  clock += 10 ** 12;
  assert.equal(memory.target('p.bin', 'v')?.href, target.href, 'a permanent one stays');
  memory.forget('p.bin');
  assert.equal(memory.target('p.bin', 'v'), undefined);
  memory.remember('t.bin', 'v', target, 0);
  assert.equal(memory.size, 0, 'a redirect HTTP does not let be reused is not kept');
  memory.remember('long.bin', 'v', new URL(`https://cdn.example/${'x'.repeat(9000)}`), Infinity);
  assert.equal(memory.size, 0, 'nor a target of more than 8 KiB');
});

test('the memory holds at most its bound, the least recently used going first', () => {
  const memory = new RedirectMemory(3, () => 0);
  const target = new URL('http://o/x');
  for (const path of ['a', 'b', 'c']) memory.remember(path, 'v', target, Infinity);
  memory.target('a', 'v');
  memory.remember('d', 'v', target, Infinity);
  assert.equal(memory.size, 3);
  assert.equal(memory.target('b', 'v'), undefined);
  for (const path of ['a', 'c', 'd']) assert.ok(memory.target(path, 'v'), path);
});
