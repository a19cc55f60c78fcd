import type { IncomingHttpHeaders } from 'node:http';

/**
 * A browser cannot put a bearer token on a page load, so the dashboard carries the read token
 * in a cookie: set once from a login form or `/ui?token=`, then sent with every asset and data
 * call. Only reads accept it (never admin calls: a cookie rides along with cross-site requests
 * a token header never does), and it is HttpOnly and SameSite=Strict.
 */
export const TOKEN_COOKIE = 'fanout_token';
const MAX_TOKEN_LENGTH = 1024;

/** The token in the request's cookie, if any. */
export function cookieToken(headers: IncomingHttpHeaders): string | undefined {
  const header = headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq).trim() !== TOKEN_COOKIE) continue;
    const raw = part.slice(eq + 1).trim();
    if (raw === '' || raw.length > 3 * MAX_TOKEN_LENGTH) return undefined;
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
 * token when it has no Authorization header of its own.
 */
export function withCookieToken(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  if (headers.authorization !== undefined) return headers;
  const token = cookieToken(headers);
  return token === undefined ? headers : { ...headers, authorization: `Bearer ${token}` };
}

/** Set-Cookie value that keeps `token` for this browser session ('' clears it). */
export function sessionCookie(token: string, secure: boolean): string {
  const value = token === '' ? '' : encodeURIComponent(token.slice(0, MAX_TOKEN_LENGTH));
  const expiry = token === '' ? '; Max-Age=0' : '';
  return `${TOKEN_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}${expiry}`;
}
