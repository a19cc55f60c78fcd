import { readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';

/**
 * Clients that stop reading: each sends one GET on its own connection, takes the first bytes
 * (so the response has started) and then reads nothing more, leaving the server to hold
 * whatever it decides to hold for them.
 */
export class StalledReaders {
  private readonly sockets: Socket[] = [];
  private readonly firstBytes: number[] = [];
  /** Readers whose response has begun (status line received). */
  started = 0;
  /** Readers whose connection the server closed. */
  closed = 0;

  static async open(base: string, paths: string[]): Promise<StalledReaders> {
    const readers = new StalledReaders();
    await Promise.all(paths.map((path) => readers.add(base, path)));
    return readers;
  }

  get count(): number {
    return this.sockets.length;
  }

  private add(base: string, path: string): Promise<void> {
    const url = new URL(base);
    return new Promise((resolve, reject) => {
      const socket = connect({ host: url.hostname, port: Number(url.port) }, () => {
        socket.write(`GET ${path} HTTP/1.1\r\nhost: ${url.host}\r\n\r\n`);
      });
      socket.once('error', reject);
      const at = this.sockets.length;
      socket.once('data', (chunk: Buffer) => {
        this.firstBytes[at] = chunk.length;
        this.started++;
        socket.pause(); // from here on, the client takes nothing
        socket.off('error', reject);
        socket.on('error', () => {});
        resolve();
      });
      socket.once('close', () => this.closed++);
      this.sockets.push(socket);
    });
  }

  /** Reads whatever each connection still has (it stops being stalled) to its end; bytes per reader, response headers included. */
  drain(): Promise<number[]> {
    return Promise.all(
      this.sockets.map(
        (socket, i) =>
          new Promise<number>((resolve) => {
            let bytes = this.firstBytes[i] ?? 0;
            socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
            socket.once('close', () => resolve(bytes));
            socket.resume();
          }),
      ),
    );
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
  }
}

/** Resident memory of a process in bytes, from /proc (Linux). */
export async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  if (!match) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}

/** The highest RSS seen over `samples` reads, `everyMs` apart (memory can still be settling). */
export async function peakRss(pid: number, samples = 10, everyMs = 200): Promise<number> {
  let peak = 0;
  for (let i = 0; i < samples; i++) {
    peak = Math.max(peak, await rssOf(pid));
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return peak;
}
