// Starts Debian's docker-registry (distribution) as a real upstream for tests.
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitFor(url: string, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    try {
      const res = await fetch(url);
      await res.body?.cancel();
      return;
    } catch (e) {
      if (Date.now() > until) throw new Error(`${url} did not answer within ${deadlineMs} ms`, { cause: e });
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export interface Registry {
  url: string;
  host: string;
  /** Request lines the registry logged so far (method and path). */
  requests(): Array<{ method: string; path: string }>;
  stop(): Promise<void>;
}

/** Starts `docker-registry serve` on 127.0.0.1 with filesystem storage in a temp dir. */
export async function startRegistry(): Promise<Registry> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-registry-'));
  const port = await freePort();
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    `version: 0.1\nlog:\n  level: info\n  formatter: json\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  const log: Array<{ method: string; path: string }> = [];
  let buffered = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      try {
        const entry = JSON.parse(line) as Record<string, string>;
        if (entry.msg === 'response completed' && entry['http.request.method'] && entry['http.request.uri']) {
          log.push({ method: entry['http.request.method'], path: entry['http.request.uri'] });
        }
      } catch {
        // not a JSON log line
      }
    }
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${url}/v2/`, 15_000);
  return {
    url,
    host: `127.0.0.1:${port}`,
    requests: () => [...log],
    async stop() {
      // A process killed by a signal has a signalCode and a null exitCode.
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
