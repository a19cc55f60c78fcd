import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * Hosts on a real (virtual) network: a Linux network namespace per host, joined by a bridge in
 * this process's namespace (its address is `net.1`), so the test reaches every host and the hosts
 * reach each other, by packets a fault can drop. Unlike SIGSTOP (the kernel still answers a
 * handshake and ACKs), a cut here makes the packets vanish: SYNs get no answer, established
 * connections go silent with their writes unacknowledged.
 *
 * Needs root and iproute2 (`ip netns`, `tc`); `NetLab.unavailable()` says why not, for a
 * test to skip. Names carry this process's pid, so labs of several test processes never collide;
 * everything created is removed by `destroy()`, and by an exit hook if the test process dies first.
 */
/** A locally administered MAC no interface of the lab has. */
const NOBODY = '02:00:00:00:de:ad';

export class NetLab {
  private readonly hosts = new Map<string, { ns: string; veth: string; address: string }>();
  private readonly bridge: string;
  private destroyed = false;
  private readonly onExit = () => this.destroySync();

  private constructor(
    private readonly tag: string,
    /** First three octets of the lab's /24, e.g. "10.213.17". */
    readonly net: string,
  ) {
    this.bridge = `${tag}br`;
  }

  /** Why no lab can be built here (not root, no `ip netns`, no netem), or undefined. */
  static unavailable(): string | undefined {
    if (process.getuid?.() !== 0) return 'network namespaces need root';
    try {
      execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
      execFileSync('tc', ['-V'], { stdio: 'ignore' });
    } catch (err) {
      return `no iproute2 here (ip netns, tc): ${(err as Error).message}`;
    }
    return undefined;
  }

  static create(): NetLab {
    const tag = `fn${process.pid % 100_000}`;
    const used = execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' });
    // A /24 of 10.213.0.0/16 no interface of this namespace is on (other labs use 10.77/10.78).
    let third = process.pid % 250;
    while (used.includes(` 10.213.${third}.`)) third = (third + 1) % 250;
    const lab = new NetLab(tag, `10.213.${third}`);
    process.once('exit', lab.onExit);
    try {
      lab.ip('link', 'add', lab.bridge, 'type', 'bridge');
      lab.ip('addr', 'add', `${lab.net}.1/24`, 'dev', lab.bridge);
      lab.ip('link', 'set', lab.bridge, 'up');
    } catch (err) {
      lab.destroySync();
      throw err;
    }
    return lab;
  }

  /** Adds host `name` (its namespace, a veth on the bridge, address net.(10 + index)); returns its address. */
  addHost(name: string): string {
    const index = this.hosts.size + 1;
    const host = { ns: `${this.tag}-${name}`, veth: `${this.tag}v${index}`, address: `${this.net}.${10 + index}` };
    this.hosts.set(name, host);
    this.ip('netns', 'add', host.ns);
    this.ip('link', 'add', host.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns);
    this.ip('link', 'set', host.veth, 'master', this.bridge, 'up');
    this.inHost(name, 'ip', 'addr', 'add', `${host.address}/24`, 'dev', 'eth0');
    this.inHost(name, 'ip', 'link', 'set', 'eth0', 'up');
    this.inHost(name, 'ip', 'link', 'set', 'lo', 'up');
    return host.address;
  }

  /** The namespace of host `name` (for `ip netns exec`). */
  namespace(name: string): string {
    return this.host(name).ns;
  }

  address(name: string): string {
    return this.host(name).address;
  }

  /**
   * Every packet to and from host `name` vanishes: a queue of no room on both ends of its link
   * drops them all (this kernel has no netem; `pfifo limit 0` drops the same way). A host that
   * went down, a firewall that drops, a cut cable: nothing is refused, reset or answered by ICMP.
   */
  cut(name: string): void {
    this.qdisc(name, ['pfifo', 'limit', '0']);
  }

  /** Host `name`'s link carries at most `rate` each way (tc tbf, e.g. "2mbit"): a slow line. */
  limitRate(name: string, rate: string): void {
    this.qdisc(name, ['tbf', 'rate', rate, 'burst', '32kb', 'latency', '400ms']);
  }

  private qdisc(name: string, params: string[]): void {
    const host = this.host(name);
    this.inHost(name, 'tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', ...params);
    execFileSync('tc', ['qdisc', 'replace', 'dev', host.veth, 'root', ...params], { stdio: 'pipe' });
  }

  /** Undoes cut() or limitRate(): the link passes everything again. */
  heal(name: string): void {
    const host = this.host(name);
    this.inHost(name, 'tc', 'qdisc', 'del', 'dev', 'eth0', 'root');
    execFileSync('tc', ['qdisc', 'del', 'dev', host.veth, 'root'], { stdio: 'pipe' });
  }

  /**
   * Only the packets between hosts `a` and `b` vanish, both ways: each sends the other's to a
   * link-layer address nobody has (a permanent neighbour entry), which the bridge floods to no
   * taker. Each still reaches every other host and is reached by them: e.g. a worker behind a
   * firewall that drops its etcd traffic. Connects hang, established connections go silent; no
   * error is reported locally (a blackhole route would fail them at once with EINVAL).
   */
  separate(a: string, b: string): void {
    this.inHost(a, 'ip', 'neigh', 'replace', this.address(b), 'lladdr', NOBODY, 'dev', 'eth0', 'nud', 'permanent');
    this.inHost(b, 'ip', 'neigh', 'replace', this.address(a), 'lladdr', NOBODY, 'dev', 'eth0', 'nud', 'permanent');
  }

  /** Undoes separate(): the neighbours are resolved again by ARP. */
  reconnect(a: string, b: string): void {
    this.inHost(a, 'ip', 'neigh', 'del', this.address(b), 'dev', 'eth0');
    this.inHost(b, 'ip', 'neigh', 'del', this.address(a), 'dev', 'eth0');
  }

  /** A command's output in host `name`'s namespace, e.g. `ss -tn`. */
  inHost(name: string, command: string, ...args: string[]): string {
    return execFileSync('ip', ['netns', 'exec', this.host(name).ns, command, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Removes every namespace, link and qdisc of the lab (processes in a namespace keep running: stop them first). */
  destroy(): void {
    this.destroySync();
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    process.removeListener('exit', this.onExit);
    for (const host of this.hosts.values()) {
      try {
        execFileSync('ip', ['netns', 'del', host.ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
      try {
        execFileSync('ip', ['link', 'del', host.veth], { stdio: 'ignore' });
      } catch {
        // went with its namespace
      }
    }
    try {
      execFileSync('ip', ['link', 'del', this.bridge], { stdio: 'ignore' });
    } catch {
      // never created
    }
  }

  private host(name: string) {
    const host = this.hosts.get(name);
    if (!host) throw new Error(`no host ${name} in this lab`);
    return host;
  }

  private ip(...args: string[]): void {
    execFileSync('ip', args, { stdio: 'pipe' });
  }
}

/**
 * The TCP sockets of process `pid` connecting to `address:port` (SYN_SENT: the kernel retrying
 * their SYN), read from /proc/PID/net/tcp, which shows the sockets of the process's namespace,
 * kept to those among its fds.
 */
export function connectsOf(pid: number, address: string, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      if (inode) inodes.add(inode);
    } catch {
      // closed meanwhile
    }
  }
  // IPv4 in host byte order (little-endian here), then the port, both in hex.
  const remote = `${Buffer.from(address.split('.').map(Number)).readUInt32LE(0).toString(16).toUpperCase().padStart(8, '0')}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let connecting = 0;
  for (const line of readFileSync(`/proc/${pid}/net/tcp`, 'utf8').split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    // cols: sl, local, remote, state (02 SYN_SENT), …, inode (10th)
    if (cols[2] === remote && cols[3] === '02' && inodes.has(cols[9]!)) connecting++;
  }
  return connecting;
}
