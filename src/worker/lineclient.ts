import type { IncomingMessage } from 'node:http';
import type { Agent } from 'undici';
import { FanoutError } from '../core/errors.js';
import type { Member } from '../core/types.js';
import { undici } from '../lib/http/undici.js';
import type { ClientTrust } from '../lib/tls/client.js';
import type { LeaseGrant, LeaseRequest } from '../lib/lines/index.js';
import { ROUTES } from '../lib/wire/index.js';

/** Renewals are tiny: an answer larger than this is not a coordinator's. */
const MAX_ANSWER_BYTES = 4096;

/** The query of a renewal (GET: no body to bound or drain). */
export function renewQuery(line: string, req: LeaseRequest): string {
  const q = new URLSearchParams({
    line,
    member: req.member,
    seq: String(req.seq),
    epoch: req.epoch,
    read: String(Math.round(req.demand.read)),
    preload: String(Math.round(req.demand.preload)),
    applied: String(Math.round(req.applied)),
    ...(req.rate !== undefined ? { rate: String(Math.round(req.rate)) } : {}),
  });
  return `${ROUTES.linesRenew}?${q}`;
}

/** Parses a renewal's query; INVALID_ARGUMENT when a field is missing or not a number. */
export function parseRenewQuery(url: string): { line: string; req: LeaseRequest } {
  const q = new URL(url, 'http://x').searchParams;
  const text = (name: string) => {
    const v = q.get(name);
    if (!v || v.length > 256) throw new FanoutError('INVALID_ARGUMENT', `renewal needs "${name}"`);
    return v;
  };
  const num = (name: string) => {
    const v = Number(text(name));
    if (!Number.isFinite(v) || v < 0) throw new FanoutError('INVALID_ARGUMENT', `renewal "${name}" must be a number ≥ 0`);
    return v;
  };
  // `rate` is absent from renewals of older builds.
  const rate = q.has('rate') ? num('rate') : undefined;
  return {
    line: text('line'),
    req: { member: text('member'), seq: num('seq'), epoch: text('epoch'), demand: { read: num('read'), preload: num('preload') }, applied: num('applied'), ...(rate !== undefined ? { rate } : {}) },
  };
}

/** Whether a request asks for the preload class (set by `fanout load` and sync prefetch). */
export function isPreload(req: IncomingMessage, header: string): boolean {
  return req.headers[header] === 'preload';
}

/**
 * Sends renewals to coordinators on other workers with the cluster credential. Every call is
 * bounded by the caller's signal (the lease's deadline) and by the agent's own timeouts.
 */
export class LineClient {
  private agent: Agent | undefined;

  constructor(private readonly options: { headers: () => Record<string, string>; connect?: ClientTrust | undefined; timeoutMs?: number }) {}

  async renew(coordinator: Member, line: string, req: LeaseRequest, signal: AbortSignal): Promise<LeaseGrant | undefined> {
    const { Agent, request } = undici();
    const timeoutMs = this.options.timeoutMs ?? 1000;
    this.agent ??= new Agent({ connect: this.options.connect, connections: 2, connectTimeout: timeoutMs, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
    const url = `${coordinator.url.replace(/\/+$/, '')}${renewQuery(line, req)}`;
    const res = await request(url, { dispatcher: this.agent, headers: this.options.headers(), signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) });
    let text = '';
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      text += chunk.toString();
      if (text.length > MAX_ANSWER_BYTES) {
        res.body.destroy();
        throw new FanoutError('WORKER_UNAVAILABLE', `coordinator ${coordinator.id} answered more than ${MAX_ANSWER_BYTES} bytes`);
      }
    }
    if (res.statusCode !== 200) throw new FanoutError('WORKER_UNAVAILABLE', `coordinator ${coordinator.id} refused the renewal of line "${line}" (HTTP ${res.statusCode})`);
    const body = JSON.parse(text) as { grant?: LeaseGrant | null };
    const g = body.grant;
    if (!g || ![g.rate, g.preloadMin, g.leaseMs].every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0)) return undefined;
    const lineRate = typeof g.lineRate === 'number' && Number.isFinite(g.lineRate) && g.lineRate > 0 ? g.lineRate : undefined;
    return { rate: g.rate, preloadMin: g.preloadMin, leaseMs: g.leaseMs, ...(lineRate !== undefined ? { lineRate } : {}) };
  }

  async close(): Promise<void> {
    await this.agent?.close().catch(() => {});
  }
}
