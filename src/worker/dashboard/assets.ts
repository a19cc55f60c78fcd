import { readFile } from 'node:fs/promises';

/**
 * The dashboard's files. HTML and CSS live here as strings; the scripts are TypeScript under
 * ./app/, compiled by the project's own tsc into ES modules next to this file, so the page
 * ships inside the package with no bundler, no copy step and nothing fetched from the internet.
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fanout</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/app.css">
<script type="module" src="/ui/app/main.js"></script>
</head>
<body>
<header>
  <h1>fanout</h1>
  <span id="summary" class="muted">loading…</span>
  <span id="updated" class="muted"></span>
  <a href="/ui/logout" id="logout" class="muted">log out</a>
</header>
<div id="banner" class="banner" hidden></div>
<main>
  <section id="members-section">
    <h2>Members <span id="members-count" class="muted"></span></h2>
    <div class="scroll"><table id="members">
      <thead><tr><th>member</th><th>health</th><th>capacity</th><th>used</th><th>pages</th><th>hit ratio</th><th>served/s</th><th>fills</th><th>address</th></tr></thead>
      <tbody></tbody>
    </table></div>
  </section>
  <section id="mounts-section">
    <h2>Sources <span class="muted">(last 15 minutes, cluster-wide)</span></h2>
    <div id="mounts" class="charts"></div>
  </section>
  <section id="flights-section">
    <h2>In flight</h2>
    <div class="split">
      <div><h3>Fills <span id="fills-count" class="muted"></span></h3>
        <table id="fills"><thead><tr><th>member</th><th>page</th><th>from</th><th>progress</th></tr></thead><tbody></tbody></table></div>
      <div><h3>Loads <span id="loads-count" class="muted"></span></h3>
        <table id="loads"><thead><tr><th>member</th><th>pages</th><th>bytes</th><th>rate</th><th>failed</th></tr></thead><tbody></tbody></table></div>
    </div>
  </section>
  <section id="releases-section">
    <h2>Releases <span id="releases-note" class="muted"></span></h2>
    <div id="releases"></div>
  </section>
</main>
</body>
</html>
`;

/** Answered (401) to a browser without a valid token when reads need one. */
export function loginHtml(message: string): string {
  const safe = message.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fanout: sign in</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/ui/app.css"></head>
<body class="login"><form method="post" action="/ui/login">
<h1>fanout</h1><p>${safe}</p>
<label>Read or admin token <input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">Open the dashboard</button>
</form></body></html>
`;
}

export const PAGE_CSS = `
:root { --fg: #1d2330; --muted: #6b7385; --line: #e3e6ec; --bg: #f7f8fa; --card: #fff; --up: #1a7f37; --down: #c62828; --warn: #b26a00; --accent: #2f6fde; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 16px; align-items: baseline; padding: 10px 20px; background: var(--card); border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 1; }
header h1 { font-size: 18px; margin: 0; }
header #logout { margin-left: auto; }
main { padding: 8px 20px 40px; }
h2 { font-size: 15px; margin: 18px 0 8px; }
h3 { font-size: 13px; margin: 6px 0; }
.muted { color: var(--muted); font-weight: normal; }
.banner { margin: 8px 20px 0; padding: 8px 12px; border-radius: 4px; background: #fdecea; color: var(--down); }
table { border-collapse: collapse; width: 100%; background: var(--card); border: 1px solid var(--line); }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-weight: 600; color: var(--muted); background: #fbfbfc; }
/* A hundred members scroll inside their box; the header stays. */
.scroll { max-height: 400px; overflow: auto; border: 1px solid var(--line); }
.scroll table { border: 0; }
.scroll thead th { position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.down td { color: var(--muted); }
.health-up { color: var(--up); font-weight: 600; }
.health-down { color: var(--down); font-weight: 600; }
.bar { display: inline-block; width: 80px; height: 8px; background: var(--line); border-radius: 4px; vertical-align: middle; margin-right: 6px; overflow: hidden; }
.bar > span { display: block; height: 100%; background: var(--accent); }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
.chart { background: var(--card); border: 1px solid var(--line); border-radius: 4px; padding: 8px 10px; }
.chart .title { display: flex; justify-content: space-between; gap: 8px; }
.chart svg { width: 100%; height: 120px; display: block; }
.chart .series { fill: none; stroke: var(--accent); stroke-width: 1.5; }
.chart .area { fill: var(--accent); opacity: 0.08; }
.chart .budget { stroke: var(--warn); stroke-dasharray: 4 3; stroke-width: 1; }
.chart .grid { stroke: var(--line); stroke-width: 1; }
.chart text { fill: var(--muted); font-size: 10px; }
.split { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.release { background: var(--card); border: 1px solid var(--line); border-radius: 4px; padding: 8px 12px; margin-bottom: 12px; }
.release h3 { font-size: 14px; }
.release .cols { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.errors { color: var(--down); max-height: 160px; overflow: auto; }
.errors li { white-space: pre-wrap; }
details summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
.phase-error { color: var(--down); font-weight: 600; }
.phase-staging, .phase-switching { color: var(--warn); font-weight: 600; }
body.login { display: grid; place-items: center; min-height: 100vh; }
body.login form { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 24px; display: grid; gap: 12px; min-width: 320px; }
body.login input { width: 100%; padding: 6px; margin-top: 4px; }
`;

/** Compiled browser modules: lowercase names only, so no request can name another file. */
const SCRIPT_NAME = /^[a-z]+\.js$/;
const scripts = new Map<string, Promise<Buffer | undefined>>();

/** The compiled module `name` (e.g. "main.js"), or undefined when there is none. Read once, then kept. */
export function appScript(name: string): Promise<Buffer | undefined> {
  if (!SCRIPT_NAME.test(name)) return Promise.resolve(undefined);
  const kept = scripts.get(name);
  if (kept) return kept;
  // Only files that exist are kept, so requests for made-up names cannot grow the map.
  const text = readFile(new URL(`./app/${name}`, import.meta.url)).then(
    (data) => data,
    () => {
      scripts.delete(name);
      return undefined;
    },
  );
  scripts.set(name, text);
  return text;
}
