import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cookieToken, fromAnotherOrigin, sessionCookie, withCookieToken } from './session.js';

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

test('the cookie counts for the dashboard\'s own origin only: another origin of the same site (another port) gets none', () => {
  const cookie = sessionCookie('read-token-0123456789', false).split(';')[0]!;
  const own = (headers: Record<string, string>) => withCookieToken({ cookie, ...headers }, { ownOrigin: true }).authorization;
  assert.equal(own({ host: 'w1:7450' }), 'Bearer read-token-0123456789', 'no word from the browser: accepted');
  assert.equal(own({ host: 'w1:7450', 'sec-fetch-site': 'same-origin' }), 'Bearer read-token-0123456789');
  assert.equal(own({ host: 'w1:7450', 'sec-fetch-site': 'none' }), 'Bearer read-token-0123456789', 'typed in the address bar');
  // Chromium's own form post from a page under no-referrer: Origin null, but the browser says same-origin.
  assert.equal(fromAnotherOrigin({ host: 'w1:7450', origin: 'null', 'sec-fetch-site': 'same-origin' }), false);
  assert.equal(own({ host: 'w1:7450', origin: 'http://w1:7450' }), 'Bearer read-token-0123456789');
  assert.equal(own({ host: 'w1', origin: 'http://w1:80' }), 'Bearer read-token-0123456789', 'default port either way');
  assert.equal(own({ host: 'W1:443', origin: 'https://w1' }), 'Bearer read-token-0123456789');
  assert.equal(own({ host: '[::1]:7450', origin: 'http://[::1]:7450' }), 'Bearer read-token-0123456789');
  // The scheme is not compared: behind a proxy that ends TLS, https://w1 reaches an http worker.
  assert.equal(own({ host: 'w1:7450', origin: 'https://w1:7450' }), 'Bearer read-token-0123456789');
  const others: Record<string, string>[] = [
    { host: 'w1:7450', 'sec-fetch-site': 'same-site' },
    { host: 'w1:7450', 'sec-fetch-site': 'cross-site' },
    { host: 'w1:7450', origin: 'http://w1:9000' },
    { host: 'w1:7450', origin: 'http://wiki.example:7450' },
    { host: 'w1:7450', origin: 'null' },
    { origin: 'http://w1:7450' },
  ];
  for (const headers of others) {
    assert.equal(fromAnotherOrigin(headers), true, JSON.stringify(headers));
    assert.equal(own(headers), undefined, JSON.stringify(headers));
  }
  assert.equal(withCookieToken({ cookie, 'sec-fetch-site': 'cross-site' }).authorization, 'Bearer read-token-0123456789', 'the page itself (/ui) takes it from anywhere');
});
