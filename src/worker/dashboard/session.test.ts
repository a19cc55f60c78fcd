import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cookieToken, sessionCookie, withCookieToken } from './session.js';

test("the dashboard's cookie carries the token; an Authorization header wins over it", () => {
  const cookie = sessionCookie('read token/with;odd=chars', false);
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  assert.doesNotMatch(cookie, /Secure/);
  assert.match(sessionCookie('x', true), /; Secure/);
  const value = cookie.split(';')[0]!;
  const headers = { cookie: `theme=dark; ${value}; other=1` };
  assert.equal(cookieToken(headers), 'read token/with;odd=chars');
  assert.equal(withCookieToken(headers).authorization, 'Bearer read token/with;odd=chars');
  assert.equal(withCookieToken({ ...headers, authorization: 'Bearer header-token' }).authorization, 'Bearer header-token');
  assert.equal(withCookieToken({ cookie: 'theme=dark' }).authorization, undefined);
  assert.equal(cookieToken({ cookie: 'fanout_token=%E0%A4%A' }), undefined, 'a malformed cookie is no token');
  assert.match(sessionCookie('', false), /Max-Age=0/, 'logging out clears it');
});
