import { spawn } from 'node:child_process';

export interface ToolResult {
  code: number;
  output: string;
}

/**
 * Runs `promtool` (Debian package prometheus, installed by scripts/install-system-deps.sh) with
 * optional stdin, and returns its exit code with stdout and stderr together.
 */
export function promtool(args: string[], input?: string, cwd?: string): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn('promtool', args, { cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    proc.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    proc.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    proc.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new Error('promtool not found: run scripts/install-system-deps.sh (Debian package prometheus)') : err),
    );
    proc.once('close', (code) => resolve({ code: code ?? -1, output }));
    proc.stdin.on('error', () => {}); // promtool may exit before reading all of stdin; its exit code tells
    proc.stdin.end(input ?? '');
  });
}

/** Metric family names in a Prometheus text exposition (from its # TYPE lines), with the series names histograms and summaries add. */
export function exposedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const match of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = match;
    names.add(name!);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name! + suffix);
    if (type === 'summary') for (const suffix of ['_sum', '_count']) names.add(name! + suffix);
  }
  return names;
}
