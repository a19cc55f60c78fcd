import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../ui/browser.js';

const ADMIN = 'dash-test-admin-token-0001';
const READ = 'dash-test-read-token-00002';
const SECRET = 'dash-test-cluster-secret-0003';
/** A token longer than the 1024 characters the cookie used to keep of it (and with characters the cookie encodes). */
const LONG = `dash-test-long-token/${'x='.repeat(600)}`;
/** A token no browser keeps in a cookie (over 4096 bytes). */
const TOO_LONG = `dash-test-too-long-token-${'y'.repeat(4100)}`;

interface Answer {
  status: number;
  headers: Headers;
  text: () => Promise<string>;
  json: () => Promise<unknown>;
}

/** A request without redirects followed (so a Set-Cookie on a 303 is seen), its body read at once (no connection left busy). */
async function get(url: string, headers: Record<string, string> = {}, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, { headers, redirect: 'manual', signal: AbortSignal.timeout(15_000), ...init });
  const body = await res.text();
  return { status: res.status, headers: res.headers, text: async () => body, json: async () => JSON.parse(body) };
}

describe("the dashboard's page and calls on a two-worker cluster that needs tokens for reads", () => {
  let workers: WorkerProcess[];
  let source: string;
  let url: string;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-dash-src-'));
    await writeFile(join(source, 'a.txt'), 'hello dashboard\n');
    const auth = { tokens: [{ token: ADMIN, role: 'admin' as const }, { token: READ, role: 'read' as const }, { token: LONG, role: 'read' as const }, { token: TOO_LONG, role: 'read' as const }], readToken: true, clusterSecret: SECRET };
    workers = await startCluster(2, { mounts: { data: source }, auth });
    url = workers[0]!.url;
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  test('without a token /ui is a login form (401) and the data calls are refused; nothing is framed or inline', async () => {
    const page = await get(`${url}/ui`);
    assert.equal(page.status, 401);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await page.text(), /<form method="post" action="\/ui\/login">/);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'.*frame-ancestors 'none'/);
    assert.equal((await get(`${url}/ui/app/main.js`)).status, 401);
    for (const call of ['/v1/status/dashboard', '/v1/status/history', '/v1/releases', '/v1/members/w2/dashboard']) {
      assert.equal((await get(`${url}${call}`)).status, 401, call);
    }
    const refused = await get(`${url}/ui?token=not-a-token-of-this-cluster`);
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('set-cookie'), null);
  });

  test('a read token given once (?token= or the form) becomes a session cookie that opens the page and its calls', async () => {
    const viaQuery = await get(`${url}/ui?token=${READ}`);
    assert.equal(viaQuery.status, 303);
    assert.equal(viaQuery.headers.get('location'), '/ui', 'the token leaves the address bar');
    const setCookie = viaQuery.headers.get('set-cookie') ?? '';
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    const viaForm = await get(`${url}/ui/login`, { 'content-type': 'application/x-www-form-urlencoded' }, { method: 'POST', body: `token=${READ}` });
    assert.equal(viaForm.status, 303);
    const cookie = { cookie: setCookie.split(';')[0]! };
    const page = await get(`${url}/ui`, cookie);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<script type="module" src="\/ui\/app\/main.js">/);
    const script = await get(`${url}/ui/app/main.js`, cookie);
    assert.equal(script.status, 200);
    assert.match(script.headers.get('content-type') ?? '', /javascript/);
    assert.equal((await get(`${url}/ui/app/missing.js`, cookie)).status, 404);
    assert.equal((await get(`${url}/ui/app/..%2F..%2Fworker.js`, cookie)).status, 404);
    assert.equal((await get(`${url}/v1/cluster`, cookie)).status, 200);
    const local = (await (await get(`${url}/v1/status/dashboard`, cookie)).json()) as { status: { id: string }; history: { intervalMs: number } };
    assert.equal(local.status.id, 'w1');
    assert.equal(local.history.intervalMs, 5_000);
  });

  test('a long token (1221 characters, over 2400 once encoded) is kept whole: the page opens with it', async () => {
    const login = await get(`${url}/ui/login`, { 'content-type': 'application/x-www-form-urlencoded' }, { method: 'POST', body: `token=${encodeURIComponent(LONG)}` });
    assert.equal(login.status, 303);
    const cookie = { cookie: (login.headers.get('set-cookie') ?? '').split(';')[0]! };
    assert.equal((await get(`${url}/ui`, cookie)).status, 200, 'signed in, not the form again');
    assert.equal((await get(`${url}/v1/status/dashboard`, cookie)).status, 200);
    // One too long for any browser's cookie (4096 bytes) is refused on the form, saying why.
    const tooLong = await get(`${url}/ui?token=${TOO_LONG}`);
    assert.equal(tooLong.status, 400);
    assert.equal(tooLong.headers.get('set-cookie'), null);
    assert.match(await tooLong.text(), /too long to keep in a browser cookie/);
  });

  test('a refused sign-in is counted with the API\'s refused tokens (fanout_request_errors_total{code="UNAUTHENTICATED"})', async () => {
    // Guesses at the form were seen nowhere, while the same guesses as a bearer token are counted.
    const refusedTokens = async () => {
      const text = await (await get(`${url}/metrics`, { authorization: `Bearer ${READ}` })).text();
      return Number(/^fanout_request_errors_total\{code="UNAUTHENTICATED"\} (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    const before = await refusedTokens();
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    for (let i = 0; i < 5; i++) assert.equal((await get(`${url}/ui/login`, form, { method: 'POST', body: `token=guess-${i}-0123456789` })).status, 401);
    assert.equal((await get(`${url}/ui?token=guess-via-link-0123456789`)).status, 401);
    assert.equal(await refusedTokens(), before + 6);
    // A visit without a token, and a sign-in that works, are no refusals.
    assert.equal((await get(`${url}/ui`)).status, 401);
    assert.equal((await get(`${url}/ui/login`, form, { method: 'POST', body: `token=${READ}` })).status, 303);
    assert.equal(await refusedTokens(), before + 6);
  });

  test('the cookie never opens admin calls, even holding an admin token', async () => {
    const login = await get(`${url}/ui?token=${ADMIN}`);
    const cookie = { cookie: (login.headers.get('set-cookie') ?? '').split(';')[0]! };
    const res = await get(`${url}/v1/admin/policy`, cookie);
    assert.equal(res.status, 401);
  });

  test('in a browser: the sign-in form takes the token, then the page shows both members with no errors', async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (err) => errors.push(err.message));
      const first = await page.goto(`${url}/ui`);
      assert.equal(first?.status(), 401);
      page.on('console', (m) => void (m.type() === 'error' && errors.push(m.text())));
      await page.fill('input[name="token"]', READ);
      await page.click('button[type="submit"]');
      await waitFor('both members up on the page', async () => (await page.locator('#members td.health-up').count()) === 2, 30_000);
      assert.equal(await page.title(), 'fanout');
      assert.deepEqual(errors, [], 'after signing in, no call of the page is refused');
    } finally {
      await browser.close();
    }
  });

  test("the session cookie opens only the dashboard's own calls: a page of another origin of the same site (another port) cannot ride it", async () => {
    const auth = { authorization: `Bearer ${READ}` };
    const info = (await (await get(`${url}/v1/stat/data/a.txt`, auth)).json()) as { version: string; size: number };
    const report = `/v1/report/data/a.txt?v=${encodeURIComponent(info.version)}&size=${info.size}&i=0`;
    const reports = async () => {
      const text = await (await get(`${url}/metrics`, auth)).text();
      return text.split('\n').filter((l) => l.startsWith('fanout_page_reports_total')).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    };
    const login = await get(`${url}/ui?token=${READ}`);
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
    // Cookies know no ports, and SameSite counts every port of a host (and every subdomain of
    // its site) as one site: a browser sends this cookie with requests such pages make.
    // In a browser: signed in, then a page served on another port of 127.0.0.1 posts a report to
    // the worker with the browser's credentials.
    const attacker: Server = createServer((_req, res) => {
      const script = `fetch(${JSON.stringify(url + report)}, { method: 'POST', mode: 'no-cors', credentials: 'include' }).finally(() => { document.title = 'sent'; });`;
      res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><title>waiting</title><script>${script}</script>`);
    });
    await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
    try {
      const page = await browser.newPage();
      assert.equal((await page.goto(`${url}/ui?token=${READ}`))?.status(), 200, 'signed in');
      const before = await reports();
      await page.goto(`http://127.0.0.1:${(attacker.address() as { port: number }).port}/`);
      await waitFor('the other page to send its request', async () => (await page.title()) === 'sent', 15_000);
      assert.equal(await reports(), before, 'the request of the other origin was refused');
    } finally {
      await browser.close();
      await new Promise<void>((resolve) => attacker.close(() => resolve()));
    }
    // The same by headers, as browsers send them (Sec-Fetch-Site over https and to loopback only).
    const elsewhere = 'http://127.0.0.1:9';
    const refused: [string, Record<string, string>, RequestInit][] = [
      [report, { cookie, origin: elsewhere }, { method: 'POST' }],
      [report, { cookie, 'sec-fetch-site': 'same-site' }, { method: 'POST' }],
      ['/v1/pages', { cookie, origin: elsewhere, 'content-type': 'text/plain' }, { method: 'POST', body: JSON.stringify({ items: [] }) }],
      ['/v1/data/data/a.txt', { cookie, 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'no-cors' }, {}],
      ['/v1/status/dashboard', { cookie, 'sec-fetch-site': 'cross-site' }, {}],
      ['/v1/cluster', { cookie, origin: 'null' }, {}],
    ];
    for (const [path, headers, init] of refused) {
      const answer = await get(`${url}${path}`, headers, init);
      assert.equal(answer.status, 401, `${path} ${JSON.stringify(headers)}: ${await answer.text()}`);
    }
    // The dashboard's own calls (same origin, or typed in the address bar), and a bearer token
    // from anywhere (no browser sends one by itself), still go through.
    const accepted: Record<string, string>[] = [{ cookie }, { cookie, 'sec-fetch-site': 'same-origin' }, { cookie, 'sec-fetch-site': 'none' }, { cookie, origin: url }, { ...auth, origin: elsewhere }];
    for (const headers of accepted) {
      const answer = await get(`${url}${report}`, headers, { method: 'POST' });
      assert.equal(answer.status, 200, `${JSON.stringify(headers)}: ${await answer.text()}`);
    }
    // A link to the page from a sibling site still opens it (the page and its files change nothing).
    assert.equal((await get(`${url}/ui`, { cookie, 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'navigate' })).status, 200);
  });

  test('a page left open once its session token is refused stops asking (refusals count against its address: auth.attempts)', async () => {
    const refusedTokens = async () => {
      const text = await (await get(`${url}/metrics`, { authorization: `Bearer ${READ}` })).text();
      return Number(/^fanout_request_errors_total\{code="UNAUTHENTICATED"\} (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
    try {
      const context = await browser.newContext();
      const page = await context.newPage();
      assert.equal((await page.goto(`${url}/ui?token=${READ}`))?.status(), 200);
      await waitFor('a first round of the page', async () => Number(await page.evaluate(() => document.body.dataset.rounds ?? 0)) >= 1, 30_000);
      const before = await refusedTokens();
      // The token changed on the workers (here: the cookie changed under the page): every call is refused.
      await context.addCookies([{ name: 'fanout_token', value: 'a-token-no-longer-accepted-0', url }]);
      await waitFor('the page to stop asking', async () => (await page.evaluate(() => document.body.dataset.stopped)) === 'signed-out', 30_000);
      const refused = (await refusedTokens()) - before;
      // One round's calls at most (a round under way when the cookie changed may have asked its members too).
      assert.ok(refused >= 1 && refused <= 4, `refusals while stopping: ${refused}`);
      assert.match(await page.locator('body').innerText(), /reload the page to sign in again/);
    } finally {
      await browser.close();
    }
  });

  test("login CSRF: a page of another origin cannot sign the browser in with its own token (403 FORBIDDEN); the dashboard's own form and curl still sign in", async () => {
    // The attacker holds a token of this cluster (READ here) and has a visitor's browser post the
    // sign-in form with it: the visitor would then use the dashboard in the attacker's session.
    const attacker: Server = createServer((_req, res) => {
      const form = `<form method="post" action="${url}/ui/login"><input name="token" value="${READ}"></form>`;
      res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><title>waiting</title>${form}<script>document.forms[0].submit();</script>`);
    });
    await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
    try {
      const context = await browser.newContext();
      const page = await context.newPage();
      const answer = page.waitForResponse((r) => r.url() === `${url}/ui/login`, { timeout: 15_000 });
      await page.goto(`http://127.0.0.1:${(attacker.address() as { port: number }).port}/`);
      const posted = await answer;
      assert.equal(posted.status(), 403, 'the cross-origin sign-in is refused (before: 303 to /ui with the session cookie)');
      assert.equal(posted.headers()['x-fanout-error'], 'FORBIDDEN');
      assert.deepEqual((await context.cookies(url)).filter((c) => c.name === 'fanout_token'), [], 'no session cookie was set');
      // The dashboard's own form, in the same browser, still signs in.
      assert.equal((await page.goto(`${url}/ui`))?.status(), 401);
      await page.fill('input[name="token"]', READ);
      const own = page.waitForResponse((r) => r.url() === `${url}/ui/login`, { timeout: 15_000 });
      await page.click('button[type="submit"]');
      assert.equal((await own).status(), 303);
      assert.equal((await context.cookies(url)).filter((c) => c.name === 'fanout_token').length, 1);
    } finally {
      await browser.close();
      await new Promise<void>((resolve) => attacker.close(() => resolve()));
    }
    // The same by headers, as browsers send them.
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    const post = (headers: Record<string, string>) => get(`${url}/ui/login`, { ...form, ...headers }, { method: 'POST', body: `token=${READ}` });
    const crossOrigin: Record<string, string>[] = [{ origin: 'http://127.0.0.1:9' }, { origin: 'https://attacker.example' }, { origin: 'null' }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }];
    for (const headers of crossOrigin) {
      const refused = await post(headers);
      assert.equal(refused.status, 403, JSON.stringify(headers));
      assert.equal(refused.headers.get('x-fanout-error'), 'FORBIDDEN');
      assert.equal(refused.headers.get('set-cookie'), null);
    }
    const ownOrAbsent: Record<string, string>[] = [{}, { origin: url }, { origin: url, 'sec-fetch-site': 'same-origin' }];
    for (const headers of ownOrAbsent) {
      assert.equal((await post(headers)).status, 303, `${JSON.stringify(headers)} signs in`);
    }
  });

  test("a member's data comes through the worker the page talks to; a dead member is reported, not an error", async () => {
    const auth = { authorization: `Bearer ${READ}` };
    const relayed = (await (await get(`${url}/v1/members/w2/dashboard`, auth)).json()) as { reachable: boolean; status: { id: string } };
    assert.equal(relayed.reachable, true);
    assert.equal(relayed.status.id, 'w2', 'relayed with the peer credential past w2 closed reads');
    assert.equal((await get(`${url}/v1/members/nobody/dashboard`, auth)).status, 404);
    await workers[1]!.kill();
    const dead = await get(`${url}/v1/members/w2/dashboard`, auth);
    assert.equal(dead.status, 200);
    const body = (await dead.json()) as { reachable: boolean; error: { code: string } };
    assert.equal(body.reachable, false);
    assert.equal(body.error.code, 'WORKER_UNAVAILABLE');
    const releases = (await (await get(`${url}/v1/releases`, auth)).json()) as { available: boolean; reason: string };
    assert.equal(releases.available, false, 'no etcd: no releases to show');
    assert.match(releases.reason, /etcd/);
  });
});
