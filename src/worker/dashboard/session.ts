import type { IncomingHttpHeaders } from 'node:http';

/**
 * A browser cannot put a bearer token on a page load, so the dashboard carries the read token
 * in a cookie: set once from a login form or `/ui?token=`, then sent with every asset and data
 * call. Only reads accept it (never admin calls: a cookie rides along with cross-site requests
 * a token header never does), and it is HttpOnly and SameSite=Strict. The API takes it from the
 * dashboard's own origin only (fromAnotherOrigin).
 */
export const TOKEN_COOKIE = 'fanout_token';
/**
 * The longest cookie value a browser keeps: name and value together within 4096 bytes (RFC
 * 6265bis 5.7; Chromium and Firefox drop a longer cookie).
 */
const MAX_COOKIE_VALUE = 4096 - TOKEN_COOKIE.length - 1;

/** The token in the request's cookie, if any. */
export function cookieToken(headers: IncomingHttpHeaders): string | undefined {
  const header = headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq).trim() !== TOKEN_COOKIE) continue;
    const raw = part.slice(eq + 1).trim();
    if (raw === '' || raw.length > MAX_COOKIE_VALUE) return undefined;
    try {
      return decodeURIComponent(raw);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/**
 * The headers to check a read against: the request's own, with the cookie's token as a bearer
 * token when it has no Authorization header of its own. With `ownOrigin`, only when the browser
 * does not say the request comes from a page of another origin (fromAnotherOrigin).
 */
export function withCookieToken(headers: IncomingHttpHeaders, options: { ownOrigin?: boolean } = {}): IncomingHttpHeaders {
  if (headers.authorization !== undefined) return headers;
  if (options.ownOrigin && fromAnotherOrigin(headers)) return headers;
  const token = cookieToken(headers);
  return token === undefined ? headers : { ...headers, authorization: `Bearer ${token}` };
}

/** Whether a browser keeps `token` whole in the session cookie. */
export function fitsCookie(token: string): boolean {
  return encodeURIComponent(token).length <= MAX_COOKIE_VALUE;
}

/**
 * Set-Cookie value that keeps `token` for this browser session ('' clears it). The token is kept
 * whole (a caller checks fitsCookie first): one cut short opened nothing, and the user who had
 * just signed in got the form again, with no word why.
 */
export function sessionCookie(token: string, secure: boolean): string {
  const value = token === '' ? '' : encodeURIComponent(token);
  const expiry = token === '' ? '; Max-Age=0' : '';
  return `${TOKEN_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}${expiry}`;
}

/**
 * Whether a browser says the request was made by a page of another origin. SameSite=Strict keeps
 * the cookie off requests from other sites only: every port of the worker's host (its S3
 * gateway, any other service there) and every subdomain of its site count as the same site, and
 * a page there had the browser send the cookie with its POSTs and fetches. The dashboard's own
 * calls are same-origin GETs: browsers send them with `Sec-Fetch-Site: same-origin` (over https
 * and to loopback; elsewhere with no such header) and without Origin, which browsers add to every
 * POST and cross-origin fetch. So another site's or origin's Sec-Fetch-Site, an opaque origin
 * ("null") or an Origin other than the Host says it is not the dashboard. Requests that say
 * nothing (a plain-http `<img>` from another port) cannot be told apart: they stay accepted.
 */
export function fromAnotherOrigin(headers: IncomingHttpHeaders): boolean {
  const site = headers['sec-fetch-site'];
  if (site === 'same-site' || site === 'cross-site') return true;
  // The browser's own word, which no page can set: its Origin may still be "null" (a page under
  // `Referrer-Policy: no-referrer` posting a form to its own origin).
  if (site === 'same-origin') return false;
  const origin = headers.origin;
  if (origin === undefined) return false;
  try {
    const from = new URL(origin);
    // The Host read as that origin's scheme would: "h" and "h:80" are one origin over http.
    return from.host !== new URL(`${from.protocol}//${headers.host ?? ''}`).host;
  } catch {
    return true; // "null" (a sandboxed page, a data: URL) or garbage: not the dashboard
  }
}
