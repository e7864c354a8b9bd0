// Starts Debian's docker-registry (distribution) as a real upstream for tests.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stopProcess, until } from './process.ts';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface Registry {
  url: string;
  host: string;
  /** Request lines the registry logged so far (method and path). */
  requests(): Array<{ method: string; path: string }>;
  /**
   * Every request answered so far, once its log line is in: the registry logs a request
   * after answering it, so a marker request is sent and waited for (the log is in order).
   */
  settledRequests(): Promise<Array<{ method: string; path: string }>>;
  stop(): Promise<void>;
}

export interface RegistryOptions {
  /** Token authentication (`auth.token`): clients need a Bearer token from `realm`. */
  token?: { realm: string; service: string; issuer: string; rootCertBundle: string };
  /** S3 storage (on the test RGW) instead of a directory; blob GETs then redirect to it. */
  s3?: { endpoint: string; bucket: string; accessKeyId: string; secretAccessKey: string };
  /** Distribution's pull-through cache mode (`proxy.remoteurl`): the reference a mirror is measured against. */
  proxy?: { remoteUrl: string };
}

/**
 * Starts `docker-registry serve` on 127.0.0.1: filesystem storage in a temp dir (or an S3
 * bucket), anonymous access (or token authentication).
 */
export async function startRegistry(options: RegistryOptions = {}): Promise<Registry> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-registry-'));
  const port = await freePort();
  const config = join(dir, 'config.yml');
  const storage = options.s3
    ? [
        's3:',
        '    region: us-east-1',
        `    regionendpoint: ${options.s3.endpoint}`,
        `    bucket: ${options.s3.bucket}`,
        `    accesskey: ${options.s3.accessKeyId}`,
        `    secretkey: ${options.s3.secretAccessKey}`,
        `    secure: ${options.s3.endpoint.startsWith('https:')}`,
        '    v4auth: true',
        '  redirect:',
        '    disable: false',
      ]
    : ['filesystem:', `    rootdirectory: ${dir}/data`];
  const auth = options.token
    ? [
        'auth:',
        '  token:',
        `    realm: ${options.token.realm}`,
        `    service: ${options.token.service}`,
        `    issuer: ${options.token.issuer}`,
        `    rootcertbundle: ${options.token.rootCertBundle}`,
      ]
    : [];
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: info',
      '  formatter: json',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      `  ${storage.join('\n')}`,
      '  delete:',
      '    enabled: true',
      ...auth,
      ...(options.proxy ? ['proxy:', `  remoteurl: ${options.proxy.remoteUrl}`] : []),
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  // The registry's AWS SDK refuses to start when AWS_CA_BUNDLE is set with its custom
  // transport; the test RGW is plain HTTP on 127.0.0.1 and needs no CA.
  const { AWS_CA_BUNDLE: _unused, ...env } = process.env;
  const child = spawn('docker-registry', ['serve', config], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const log: Array<{ method: string; path: string }> = [];
  let buffered = '';
  let tail = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-2000);
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
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`docker-registry exited ${code}: ${tail}`))));
  const answers = () => fetch(`${url}/v2/`).then((res) => (void res.body?.cancel(), true), () => false);
  await Promise.race([until(answers, 15_000, 'docker-registry to answer'), exited]);
  exited.catch(() => {});
  return {
    url,
    host: `127.0.0.1:${port}`,
    requests: () => [...log],
    async settledRequests() {
      const marker = `/v2/?settled=${randomUUID()}`;
      await fetch(`${url}${marker}`).then((res) => res.arrayBuffer());
      await until(async () => log.some((r) => r.path === marker), 10_000, 'the registry to log the marker request');
      return log.filter((r) => r.path !== marker);
    },
    async stop() {
      await stopProcess(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
