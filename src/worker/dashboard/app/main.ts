/// <reference lib="dom" />
/**
 * The dashboard page: every REFRESH_MS it reads the member list from the worker that served
 * it, asks each member for its status, activity and new samples through that worker (at most
 * CONCURRENCY at a time, each with a deadline: a member that does not answer shows as down),
 * and updates the tables and charts in place.
 */
import type { RelayedMember } from '../index.js';
import type { ReleasesAnswer } from '../releases.js';
import { ApiError, forEachLimited, getJson, serverOffsetMs } from './api.js';
import { byId } from './dom.js';
import { FlightsView } from './flights.js';
import { bytes, percent, plural } from './format.js';
import { MembersView } from './members.js';
import { ClusterModel, type ClusterView } from './model.js';
import { MountsView } from './mounts.js';
import { ReleasesView } from './releases.js';

const REFRESH_MS = 2_000;
const CLUSTER_TIMEOUT_MS = 3_000;
/** Above the worker's own relay deadline (2.5 s), so the worker's answer "down" arrives first. */
const MEMBER_TIMEOUT_MS = 4_000;
const RELEASES_TIMEOUT_MS = 5_000;
/** A browser opens at most six connections to one server: more member calls would only queue. */
const CONCURRENCY = 6;
const DOWN_LANES = 2;

const model = new ClusterModel();
const members = new MembersView(byId('members').querySelector('tbody')!);
const mounts = new MountsView();
const flights = new FlightsView();
const releases = new ReleasesView(() => void refreshReleases());
let intervalMs = 5_000;
let rounds = 0;
let renderQueued = false;

function banner(text: string | undefined): void {
  const node = byId('banner');
  node.hidden = text === undefined;
  if (text !== undefined && node.textContent !== text) node.textContent = text;
}

/** Coalesces the per-member updates of a round into one render per frame. */
function queueMembersRender(): void {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    members.render(model);
  });
}

async function askMember(id: string): Promise<void> {
  try {
    const answer = await getJson<RelayedMember>(`/v1/members/${encodeURIComponent(id)}/dashboard?since=${model.since(id)}`, MEMBER_TIMEOUT_MS);
    if (answer.reachable) intervalMs = answer.history.intervalMs;
    model.applyMember(id, answer, Date.now() + serverOffsetMs);
  } catch (err) {
    model.applyMember(id, undefined, Date.now() + serverOffsetMs, (err as Error).message);
  }
  queueMembersRender();
}

/**
 * Members that were down are asked again beside the rounds, on DOWN_LANES of the browser's six
 * connections: each hung member costs a deadline, and the figures of those that answer must not
 * wait for them. A member that answers again is up from then on.
 */
let probingDown = false;
function probeDown(ids: string[]): void {
  if (probingDown || ids.length === 0) return;
  probingDown = true;
  void forEachLimited(ids, DOWN_LANES, askMember).finally(() => {
    probingDown = false;
  });
}

async function refreshReleases(): Promise<void> {
  const open = releases.openHostList();
  const path = open ? `/v1/releases?hosts=${encodeURIComponent(open)}` : '/v1/releases';
  try {
    releases.render(await getJson<ReleasesAnswer>(path, RELEASES_TIMEOUT_MS));
  } catch (err) {
    releases.render({ available: false, reason: 'cannot read releases', error: { code: (err as ApiError).code ?? 'NETWORK', message: (err as Error).message } });
  }
}

async function round(): Promise<void> {
  let cluster: ClusterView;
  try {
    cluster = await getJson<ClusterView>('/v1/cluster', CLUSTER_TIMEOUT_MS);
  } catch (err) {
    const e = err as ApiError;
    if (e.status === 401 || e.status === 429) {
      // Refused tokens count against this address (auth.attempts): a tab left open after a
      // token change would ask every 2 s and soon throttle every client of this host, the CLI
      // with a right token too. So the page stops asking until it is reloaded.
      stopped = 'signed-out';
      banner(e.status === 401 ? 'The session token is no longer accepted: reload the page to sign in again.' : 'Too many refused tokens from this address: reload the page in a minute to sign in again.');
      return;
    }
    banner(`The worker serving this page does not answer (${e.message}); showing the last figures.`);
    return;
  }
  banner(cluster.stale ? 'Membership is stale: this worker cannot reach etcd and uses the last member list it knew.' : undefined);
  model.updateCluster(cluster, Date.now() + serverOffsetMs);
  const releasesDone = refreshReleases();
  const ids = model.liveIds();
  const down = ids.filter((id) => model.members.get(id)?.health === 'down');
  probeDown(down);
  const up = ids.filter((id) => model.members.get(id)?.health !== 'down');
  await forEachLimited(up, probingDown ? CONCURRENCY - DOWN_LANES : CONCURRENCY, askMember);
  const now = Date.now() + serverOffsetMs;
  members.render(model);
  mounts.render(model, now, intervalMs);
  flights.render(model);
  const t = model.totals();
  byId('members-count').textContent = `(${t.up} of ${plural(t.total, 'member')} up)`;
  byId('summary').textContent = `${bytes(t.used)} of ${bytes(t.capacity)} used, ${t.pages.toLocaleString('en-US')} pages, hit ratio ${percent(t.hits, t.hits + t.misses)}`;
  await releasesDone;
  byId('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
}

/** Why the page stopped refreshing, if it did (a refused session token). */
let stopped: string | undefined;

async function loop(): Promise<void> {
  const started = performance.now();
  try {
    await round();
  } finally {
    // Counted for tests and people alike: a page whose counter stops has stopped refreshing.
    document.body.dataset.rounds = String(++rounds);
    document.body.dataset.roundMs = String(Math.round(performance.now() - started));
    if (stopped) document.body.dataset.stopped = stopped;
    else setTimeout(() => void loop(), REFRESH_MS);
  }
}

void loop();
