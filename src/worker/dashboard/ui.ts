import type { IncomingMessage, ServerResponse } from 'node:http';
import { FanoutError } from '../../core/errors.js';
import type { AccessGate } from '../../lib/auth/index.js';
import { appScript, loginHtml, PAGE_CSS, PAGE_HTML } from './assets.js';
import { fitsCookie, sessionCookie, withCookieToken } from './session.js';
import { readBody } from '../http.js';

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
  'referrer-policy': 'no-referrer',
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
    if (token !== null && (route === '/ui' || route === '/ui/')) return this.acceptToken(res, token);
    if (!this.allowed(req)) {
      // The stylesheet stays reachable so that the login form looks like the rest.
      if (route !== '/ui/app.css') return send(res, 401, 'text/html; charset=utf-8', loginHtml('This worker needs a token to be read.'));
    }
    if (route === '/ui' || route === '/ui/') return send(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
    if (route === '/ui/app.css') return send(res, 200, 'text/css; charset=utf-8', PAGE_CSS);
    if (route.startsWith('/ui/app/')) {
      const script = await appScript(route.slice('/ui/app/'.length));
      if (script) return send(res, 200, 'text/javascript; charset=utf-8', script);
    }
    throw new FanoutError('NOT_FOUND', `no such dashboard file: ${route.slice(0, 200)}`);
  }

  private allowed(req: IncomingMessage): boolean {
    try {
      this.gate.check(withCookieToken(req.headers), 'read');
      return true;
    } catch {
      return false;
    }
  }

  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      throw new FanoutError('INVALID_ARGUMENT', '/ui/login takes a POSTed form');
    }
    const token = new URLSearchParams((await readBody(req, MAX_LOGIN_BODY, 'login form')).toString()).get('token') ?? '';
    return this.acceptToken(res, token);
  }

  /** A token that opens reads is kept in the cookie; any other gets the form again. */
  private acceptToken(res: ServerResponse, token: string): void {
    try {
      this.gate.check({ authorization: `Bearer ${token}` }, 'read');
    } catch {
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

function send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...SECURITY_HEADERS });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function redirect(res: ServerResponse, location: string, cookie: string): void {
  res.writeHead(303, { location, 'set-cookie': cookie, 'content-length': 0, 'cache-control': 'no-store', ...SECURITY_HEADERS });
  res.end();
}
