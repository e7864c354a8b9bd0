// Starts the server as `npm start` runs it (the esbuild bundle of workers/node.ts, built
// once per test process) as a real process on 127.0.0.1, and stops it by PID.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { freePort } from './registry.ts';
import { buildServer } from '../../scripts/build.ts';
import { stopProcess } from './process.ts';

let bundle: Promise<string> | undefined;

/** The Node flags `npm start` gives the server (package.json is their one source). */
async function startFlags(): Promise<string[]> {
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } };
  const command = /(?:^|&&)\s*exec node ((?:--\S+\s+)*)dist\/server\.mjs\s*$/.exec(pkg.scripts.start);
  if (!command) throw new Error(`package.json start script does not end in "exec node [flags] dist/server.mjs": ${pkg.scripts.start}`);
  return command[1]!.split(/\s+/).filter(Boolean);
}

export interface Server {
  url: string;
  host: string;
  child: ChildProcess;
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startServer(env: Record<string, string>): Promise<Server> {
  const entry = await (bundle ??= buildServer());
  const port = await freePort();
  const child = spawn(process.execPath, [...(await startFlags()), entry], { env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${output}`)), 30_000);
    // Removed once seen: it scans the whole output, which a busy server makes long.
    const check = () => {
      if (!output.includes('"msg":"listening"')) return;
      clearTimeout(timer);
      child.stdout!.off('data', check);
      resolve();
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`server exited ${code}: ${output}`))));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    child,
    output: () => output,
    stop: (signal = 'SIGTERM') => stopProcess(child, signal),
  };
}

/**
 * Runs the server bundle with `env` (on `port`, or a free one) until it exits by itself, as
 * a start-up that must fail does: its exit code and what it printed.
 */
export async function runServerToExit(env: Record<string, string>, port?: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const entry = await (bundle ??= buildServer());
  const child = spawn(process.execPath, [...(await startFlags()), entry], {
    env: { ...process.env, PORT: String(port ?? (await freePort())), HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** The `Authorization` header of Basic credentials, as fetch headers. */
export const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
