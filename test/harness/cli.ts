import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import { fanoutBin } from './workers.js';

export interface CliResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs the real `fanout` CLI and captures its output; `wrapper` runs it (`[cmd, ...args]`, the CLI's command line last). */
export function fanout(args: string[], env: Record<string, string> = {}, wrapper: string[] = []): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const [command, ...commandArgs] = [...wrapper, process.execPath, fanoutBin, ...args];
    const proc = spawn(command!, commandArgs, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    proc.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    proc.once('error', reject);
    proc.once('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr }));
  });
}

/** The environment that runs bin/fanout.js as an executable, as users do (its `sh` lines then run): this Node first on PATH. */
export function executableEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}`, ...extra };
}

export async function fanoutJson<T = unknown>(args: string[]): Promise<T> {
  const result = await fanout([...args, '--json']);
  if (result.code !== 0) throw new Error(`fanout ${args.join(' ')} failed (${result.code}): ${result.stdout}${result.stderr}`);
  return JSON.parse(result.stdout.toString()) as T;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
