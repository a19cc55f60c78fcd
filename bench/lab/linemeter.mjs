// Counts what crosses the two-datacenter lab's line (bench/lab/netlab-dc.sh), sampled every
// 100 ms without a process per sample: one long-lived `tc -batch -` in router "ra" answers
// "qdisc show dev line" (the tbf's Sent bytes: wire bytes, every segment's headers included, and
// its drops), and /proc/<that tc's pid>/net/dev gives the line interface's own counters in the
// same namespace (GSO super-packets counted once: within ~0.1% of the TCP payload).
// Router "rb" is read the same way for the other direction (B → A: requests and ACKs).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

const SENT = /Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)/;

/** One namespace's `tc -batch` session on its "line" device. */
class LineEnd {
  constructor(netlab, router) {
    // stdbuf: tc's stdout is a pipe here, so without line buffering no answer would arrive.
    this.proc = spawn(netlab, ['exec', router, 'stdbuf', '-oL', 'tc', '-s', '-batch', '-'], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.proc.on('error', (err) => (this.error = err));
    this.proc.stdin.on('error', (err) => (this.error = err));
    this.latest = null;
    this.waiters = [];
    let text = '';
    this.proc.stdout.setEncoding('utf8').on('data', (chunk) => {
      text += chunk;
      let m;
      while ((m = SENT.exec(text))) {
        text = text.slice(m.index + m[0].length);
        this.latest = { wire: Number(m[1]), drops: Number(m[3]), overlimits: Number(m[4]) };
        for (const w of this.waiters.splice(0)) w(this.latest);
      }
    });
  }
  /** The tbf counters now (asks tc once; resolves on its answer, fails after 2 s). */
  ask() {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('tc did not answer within 2 s')), 2000);
      this.waiters.push((c) => (clearTimeout(timer), resolve(c)));
      this.proc.stdin.write('qdisc show dev line\n');
    });
  }
  /** The line interface's tx/rx bytes (from /proc/net/dev as the tc process sees it). */
  iface() {
    const line = readFileSync(`/proc/${this.proc.pid}/net/dev`, 'utf8').split('\n').find((l) => /^\s*line:/.test(l));
    if (!line) throw new Error('no "line" interface in the router namespace');
    const f = line.split(':')[1].trim().split(/\s+/).map(Number);
    return { rxBytes: f[0], txBytes: f[8] };
  }
  close() {
    this.proc.stdin.end();
    if (this.proc.exitCode === null) this.proc.kill('SIGTERM');
  }
}

export class LineMeter {
  constructor(netlab) {
    this.a = new LineEnd(netlab, 'ra');
    this.b = new LineEnd(netlab, 'rb');
    this.samples = []; // { t (ms), wire, payload }: A → B
    this.timer = null;
  }

  /** Starts sampling A → B every 100 ms (after the first answer, so the pid's namespace is set). */
  async start() {
    await this.a.ask();
    await this.b.ask();
    let busy = false;
    this.timer = setInterval(async () => {
      if (busy) return; // a slow answer on a loaded machine: skip a tick rather than pile up
      busy = true;
      try {
        const c = await this.a.ask();
        this.samples.push({ t: performance.now(), wire: c.wire, payload: this.a.iface().txBytes });
      } catch {
        // one missed sample: the window computation uses real timestamps, so a gap is harmless
      } finally {
        busy = false;
      }
    }, 100);
  }

  /** Counters of both directions, to subtract: { atob: {payload, wire, drops}, btoa: {...}, t }. */
  async snapshot() {
    const [ca, cb] = await Promise.all([this.a.ask(), this.b.ask()]);
    return {
      t: performance.now(),
      atob: { payload: this.a.iface().txBytes, wire: ca.wire, drops: ca.drops },
      btoa: { payload: this.b.iface().txBytes, wire: cb.wire, drops: cb.drops },
    };
  }

  /**
   * The highest rate A → B over any 1-second window between two snapshots' times (bytes/s of
   * wire and of payload), from samples ~100 ms apart: each window spans the first sample at
   * least 1 s after its start, and the rate divides by its real length.
   */
  peak(from, to) {
    const s = this.samples.filter((x) => x.t >= from.t && x.t <= to.t);
    let wire = 0;
    let payload = 0;
    let j = 0;
    for (let i = 0; i < s.length; i++) {
      if (j <= i) j = i + 1;
      while (j < s.length && s[j].t - s[i].t < 1000) j++;
      if (j >= s.length) break;
      const dt = (s[j].t - s[i].t) / 1000;
      wire = Math.max(wire, (s[j].wire - s[i].wire) / dt);
      payload = Math.max(payload, (s[j].payload - s[i].payload) / dt);
    }
    return { wire, payload, samples: s.length };
  }

  close() {
    clearInterval(this.timer);
    this.a.close();
    this.b.close();
  }
}
