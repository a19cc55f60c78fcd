import type { Agent, Pool } from 'undici';
import { undici } from '../http/undici.js';
import { encodeUrlPath } from '../../core/paths.js';
import type { Member, PageRef } from '../../core/types.js';

/** Route a worker takes reports on (worker/reports.ts). */
export const REPORT_ROUTE = '/v1/report';

/**
 * What the worker found when it re-read its copy (worker/reports.ts): `corrupt` means it held a
 * corrupt copy and has dropped it, so its next answer for the page is a fresh fill.
 */
/** A report's answer is `{"result": …}`: anything longer is not a worker's. */
const MAX_ANSWER_BYTES = 4096;

export type ReportResult = 'intact' | 'corrupt' | 'absent';

/** Tells a worker that a page it sent failed the reader's checksum. */
export interface PageReporter {
  /**
   * Resolves once the worker answered, with what it found, or with undefined when the report
   * failed, timed out or was not sent: never rejects.
   */
  report(member: Member, ref: PageRef): Promise<ReportResult | undefined>;
}

export interface HttpPageReporterOptions {
  /** Credentials: reports are authenticated like page reads. */
  headers?: () => Record<string, string>;
  connect?: Pool.Options['connect'];
  /** Deadline of one report, connect to answer. Default 5 s. */
  timeoutMs?: number;
}

/** Reports in flight at once; more are dropped (the reader has already failed over). */
const MAX_INFLIGHT = 8;

/**
 * POST /v1/report/MOUNT/PATH?v&size&i[&h]: the worker re-reads its stored copy, drops it if it
 * is corrupt (so its next read refetches it) and counts it. A report is advice, never required:
 * one that cannot be sent, times out or is refused changes nothing for the read, which has
 * already gone to the next worker. Reports go on their own small pool, so a pool full of page
 * requests never delays them.
 */
export class HttpPageReporter implements PageReporter {
  private agent: Agent | undefined;
  private readonly timeoutMs: number;
  private inflight = 0;

  constructor(private readonly options: HttpPageReporterOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 5000;
  }

  async report(member: Member, ref: PageRef): Promise<ReportResult | undefined> {
    if (this.inflight >= MAX_INFLIGHT) return undefined;
    this.inflight++;
    const query = `v=${encodeURIComponent(ref.version)}&size=${ref.size}&i=${ref.index}` + (ref.hash ? `&h=${ref.hash}` : '');
    const url = `${member.url}${REPORT_ROUTE}/${encodeUrlPath(ref.mount)}/${encodeUrlPath(ref.path)}?${query}`;
    try {
      const { Agent, request } = undici();
      this.agent ??= new Agent({ connect: this.options.connect, connections: 2, connectTimeout: this.timeoutMs, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs });
      const response = await request(url, { method: 'POST', dispatcher: this.agent, headers: this.options.headers?.(), signal: AbortSignal.timeout(this.timeoutMs) });
      if (response.statusCode !== 200) {
        await response.body.dump();
        return undefined;
      }
      // A worker's answer is a few dozen bytes: a longer one (a broken or hostile peer) is not read on.
      let text = '';
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        text += chunk.toString();
        if (text.length > MAX_ANSWER_BYTES) {
          response.body.destroy();
          return undefined;
        }
      }
      const result = (JSON.parse(text) as { result?: unknown } | null)?.result;
      return result === 'intact' || result === 'corrupt' || result === 'absent' ? result : undefined;
    } catch {
      // advice only: the read has its answer from another worker
      return undefined;
    } finally {
      this.inflight--;
    }
  }

  async close(): Promise<void> {
    await this.agent?.destroy().catch(() => {});
  }
}
