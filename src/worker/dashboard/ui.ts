import type { IncomingMessage, ServerResponse } from 'node:http';
import { FanoutError } from '../../core/errors.js';
import { ThrottledError, type AccessGate } from '../../lib/auth/index.js';
import { appScript, loginHtml, PAGE_CSS, PAGE_HTML } from './assets.js';
import { fitsCookie, fromAnotherOrigin, sessionCookie, withCookieToken } from './session.js';
import { readBody } from '../http.js';
import { HEADERS } from '../../lib/wire/index.js';

/** A login form body holds one token; anything longer is not one. */
const MAX_LOGIN_BODY = 4096;

/**
 * Nothing on the page may come from elsewhere, run inline, or be framed: the dashboard shows a
 * cluster's inner workings and takes a token.
 */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  // Never a Referer to another origin (a URL may hold ?token=). Not no-referrer: under it a
  // browser sends `Origin: null` with the sign-in form's POST (Fetch's origin serialization), and
  // over plain http to a non-loopback name, with no Sec-Fetch-Site, that could not be told from a
  // sandboxed page of another origin, which the form refuses (login CSRF).
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
};

/**
 * /ui and its files, with the read API's access rule: when reads need a token, a browser
 * without a valid one gets a login form (401) that stores the token in a session cookie.
 *   GET  /ui, /ui/              the page
 *   GET  /ui?token=TOKEN        stores the token, then redirects to /ui (for scripted links)
 *   POST /ui/login              form: token=TOKEN
 *   GET  /ui/logout             forgets it
 *   GET  /ui/app.css, /ui/app/NAME.js
 */
export class UiPages {
  constructor(
    private readonly gate: AccessGate,
    private readonly secureCookie: boolean,
    /** Told of each token the form or a link gave that was refused (counted as the API's refusals are). */
    private readonly onRefusedToken: () => void = () => {},
  ) {}

  async serve(req: IncomingMessage, res: ServerResponse, route: string): Promise<void> {
    const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    if (route === '/ui/login') return this.login(req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      throw new FanoutError('INVALID_ARGUMENT', `method ${req.method} is not supported on ${route}`);
    }
    if (route === '/ui/logout') return redirect(res, '/ui', sessionCookie('', this.secureCookie));
    const token = query.get('token');
    if (token !== null && (route === '/ui' || route === '/ui/')) return this.acceptToken(req, res, token);
    // The stylesheet stays reachable without a token so that the login form looks like the rest
    // (its cookie is not checked: a stale one would count as a refused token once more per page).
    if (route === '/ui/app.css') return send(res, 200, 'text/css; charset=utf-8', PAGE_CSS);
    const refusal = this.refusal(req);
    if (refusal instanceof ThrottledError) return sendThrottled(res, refusal);
    if (refusal) return send(res, 401, 'text/html; charset=utf-8', loginHtml('This worker needs a token to be read.'));
    if (route === '/ui' || route === '/ui/') return send(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
    if (route.startsWith('/ui/app/')) {
      const script = await appScript(route.slice('/ui/app/'.length));
      if (script) return send(res, 200, 'text/javascript; charset=utf-8', script);
    }
    throw new FanoutError('NOT_FOUND', `no such dashboard file: ${route.slice(0, 200)}`);
  }

  /** Why the request's token (its cookie's) does not open the page, if it does not. */
  private refusal(req: IncomingMessage): unknown {
    try {
      this.gate.check(withCookieToken(req.headers), 'read', req.socket, 'dashboard');
      return undefined;
    } catch (err) {
      return err ?? new Error('refused');
    }
  }

  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      throw new FanoutError('INVALID_ARGUMENT', '/ui/login takes a POSTed form');
    }
    // Login CSRF: a page of another origin (another site, or another port or subdomain of this
    // one) could post the form and sign the visitor's browser in with the attacker's token, so
    // that what the visitor then does on the dashboard is seen through the attacker's session.
    // Browsers send Origin with every form POST (Sec-Fetch-Site too, over https and to loopback);
    // the dashboard's own form is same-origin. A client with neither (curl) goes on.
    if (fromAnotherOrigin(req.headers)) {
      throw new FanoutError('FORBIDDEN', `the sign-in form takes posts from the dashboard's own page only (this request came from ${describeOrigin(req)})`);
    }
    const token = new URLSearchParams((await readBody(req, MAX_LOGIN_BODY, 'login form')).toString()).get('token') ?? '';
    return this.acceptToken(req, res, token);
  }

  /** A token that opens reads is kept in the cookie; any other gets the form again. */
  private acceptToken(req: IncomingMessage, res: ServerResponse, token: string): void {
    try {
      this.gate.check({ authorization: `Bearer ${token}` }, 'read', req.socket, 'dashboard');
    } catch (err) {
      if (err instanceof ThrottledError) return sendThrottled(res, err);
      // Counted with the API's refused tokens: guesses at the form were seen nowhere.
      this.onRefusedToken();
      return send(res, 401, 'text/html; charset=utf-8', loginHtml('That token was refused. Give a read or admin token of this cluster.'));
    }
    if (!fitsCookie(token)) {
      return send(res, 400, 'text/html; charset=utf-8', loginHtml('That token is too long to keep in a browser cookie (4096 bytes once URL-encoded). Give a shorter read or admin token of this cluster.'));
    }
    redirect(res, '/ui', sessionCookie(token, this.secureCookie));
  }
}

/** The form again, 429 with Retry-After and the error's code, for an address throttled for its refused tokens. */
function sendThrottled(res: ServerResponse, err: ThrottledError): void {
  const seconds = err.retryAfterSeconds;
  send(res, 429, 'text/html; charset=utf-8', loginHtml(`Too many refused tokens from this address: try again in ${seconds} s.`), {
    'retry-after': String(seconds),
    [HEADERS.error]: err.code,
  });
}

/** The Origin, or Sec-Fetch-Site, a browser said a refused sign-in came from (for its message). */
function describeOrigin(req: IncomingMessage): string {
  const origin = req.headers.origin;
  if (origin !== undefined) return `Origin ${JSON.stringify(origin.slice(0, 200))}`;
  return `Sec-Fetch-Site ${JSON.stringify(String(req.headers['sec-fetch-site']).slice(0, 40))}`;
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...SECURITY_HEADERS, ...extra });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function redirect(res: ServerResponse, location: string, cookie: string): void {
  res.writeHead(303, { location, 'set-cookie': cookie, 'content-length': 0, 'cache-control': 'no-store', ...SECURITY_HEADERS });
  res.end();
}
