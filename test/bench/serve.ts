// `npm run bench` (serve): what a warm request costs. wrk and ab (Debian's packages) at 64
// connections against the mirror (filesystem store), against distribution in proxy mode
// warmed with the same image, against a bare `node:http` server that answers every request
// with the same bytes from memory (the ceiling a Node process has on this machine), and
// against a bare Hono route serving those bytes (the floor of the framework the mirror is
// built on: what any Hono app pays before its own work).
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, startRegistry } from '../setup/registry.ts';
import { pushImage, tarOf, upstreamBlob } from '../setup/images.ts';
import { startServer } from '../setup/server.ts';
import { stopProcess, until } from '../setup/process.ts';
import { eq } from 'drizzle-orm';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { blobs } from '../../schema/blobs.ts';
import { MANIFEST_MEDIA_TYPES } from '../../core/oci/manifest.ts';
import { cleanups, hwmOf, report, runBench } from './harness.ts';

const CONNECTIONS = 64;
const DURATION_SECONDS = 6;
const WARMUP_SECONDS = 2;
const ACCEPT = MANIFEST_MEDIA_TYPES.join(', ');

interface LoadRun {
  rps: number;
  p50: string;
  p99: string;
  errors: number;
}

/**
 * One run at CONNECTIONS: wrk for GET; ApacheBench (`ab -i`) for HEAD, since wrk 4.1 waits
 * for a body after a HEAD answer that has a Content-Length. One load thread each, so that
 * on two cores the load has one and the server the other: with two wrk threads the load
 * takes CPU from the server, and the more a server does per request the more it loses
 * (measured: the mirror 8.0k → 5.1k req/s, the bare server 14.4k → 18.4k). Each server
 * gets WARMUP_SECONDS of the same load first, so that every one is measured with its hot
 * code compiled.
 */
async function load(url: string, method: 'GET' | 'HEAD', headers: Record<string, string> = {}, seconds = DURATION_SECONDS): Promise<LoadRun> {
  const headerArgs = Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
  if (method === 'HEAD') {
    const { stdout } = await promisify(execFile)('ab', ['-i', '-k', '-q', `-c${CONNECTIONS}`, `-t${seconds}`, '-n10000000', ...headerArgs, url], { maxBuffer: 1 << 20 });
    const rps = Number(/Requests per second:\s+([\d.]+)/.exec(stdout)?.[1]);
    const percentile = (p: string) => `${new RegExp(`^\\s+${p}%\\s+(\\d+)`, 'm').exec(stdout)?.[1] ?? '?'}ms`;
    const errors = Number(/Non-2xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0) + Number(/Failed requests:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
    if (!Number.isFinite(rps)) throw new Error(`ab printed no rate:\n${stdout}`);
    return { rps, p50: percentile('50'), p99: percentile('99'), errors };
  }
  const { stdout } = await promisify(execFile)('wrk', ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', ...headerArgs, url], { maxBuffer: 1 << 20 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]);
  const percentile = (p: string) => new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(stdout)?.[1] ?? '?';
  const errors = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0) + Number(/Socket errors:.*timeout (\d+)/.exec(stdout)?.[1] ?? 0);
  if (!Number.isFinite(rps)) throw new Error(`wrk printed no rate:\n${stdout}`);
  return { rps, p50: percentile('50'), p99: percentile('99'), errors };
}

const describe = (w: LoadRun) => `${Math.round(w.rps).toLocaleString('en')} req/s, p50 ${w.p50}, p99 ${w.p99}${w.errors ? `, ${w.errors} errors` : ''}`;

/**
 * A reference server answering every path with one of these bodies (by the path's last
 * segment kind), from memory: a bare `node:http` listener, or the least a Hono app on
 * @hono/node-server does (one route per kind, a plain-object header Response, no
 * middleware): the floor the mirror's framework sets before any of its own work.
 */
async function referenceServer(kind: 'bare' | 'hono', manifest: Buffer, manifestType: string, manifestDigest: string, blob: Buffer, blobDigest: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), `pt-${kind}-`));
  await writeFile(join(dir, 'manifest'), manifest);
  await writeFile(join(dir, 'blob'), blob);
  const answer = `
    const manifest = readFileSync(${JSON.stringify(join(dir, 'manifest'))});
    const blob = readFileSync(${JSON.stringify(join(dir, 'blob'))});
    const headersFor = (isBlob, body) => ({
      'content-type': isBlob ? 'application/octet-stream' : ${JSON.stringify(manifestType)},
      'content-length': String(body.length),
      'docker-content-digest': isBlob ? ${JSON.stringify(blobDigest)} : ${JSON.stringify(manifestDigest)},
    });
  `;
  const source =
    kind === 'bare'
      ? `
    import { createServer } from 'node:http';
    import { readFileSync } from 'node:fs';
    ${answer}
    createServer((req, res) => {
      const isBlob = req.url.includes('/blobs/');
      const body = isBlob ? blob : manifest;
      res.writeHead(200, headersFor(isBlob, body));
      res.end(req.method === 'HEAD' ? undefined : body);
    }).listen(${port}, '127.0.0.1', () => console.log('listening'));
  `
      : `
    import { Hono } from 'hono';
    import { serve } from '@hono/node-server';
    import { readFileSync } from 'node:fs';
    ${answer}
    const app = new Hono();
    app.get('/v2/:name{.+}/manifests/:reference', (c) => new Response(c.req.method === 'HEAD' ? null : manifest, { status: 200, headers: headersFor(false, manifest) }));
    app.get('/v2/:name{.+}/blobs/:digest', (c) => new Response(c.req.method === 'HEAD' ? null : blob, { status: 200, headers: headersFor(true, blob) }));
    serve({ fetch: app.fetch, port: ${port}, hostname: '127.0.0.1' }, () => console.log('listening'));
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', source], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`${kind} server exited ${code}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    stop: async () => {
      await stopProcess(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'pt-bench-serve-'));
  cleanups.push(() => rm(scratch, { recursive: true, force: true }));
  const registry = await startRegistry();
  cleanups.push(() => registry.stop());
  // One 64 KiB layer, stored as it is (no compression): the blob GET serves exactly 65,536 bytes.
  const layerTar = tarOf({ data: randomBytes(64 * 1024 - 1536) });
  const image = await pushImage(registry, 'library/small', 'v1', [{ tar: layerTar }], { compression: 'none' });
  const blobDigest = image.layers[0]!.digest;
  const manifest = await upstreamBlob(registry, 'library/small', image.manifestDigest).catch(async () => {
    const res = await fetch(`${registry.url}/v2/library/small/manifests/${image.manifestDigest}`, { headers: { accept: ACCEPT } });
    return Buffer.from(await res.arrayBuffer());
  });
  const blob = await upstreamBlob(registry, 'library/small', blobDigest);

  const mirror = await startServer({ DATA_DIR: join(scratch, 'mirror'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }), TAG_TTL_SECONDS: '3600' });
  cleanups.push(() => mirror.stop());
  const proxy = await startRegistry({ proxy: { remoteUrl: registry.url } });
  cleanups.push(() => proxy.stop());
  const bare = await referenceServer('bare', manifest, image.mediaType, image.manifestDigest, blob, blobDigest);
  cleanups.push(() => bare.stop());
  const floor = await referenceServer('hono', manifest, image.mediaType, image.manifestDigest, blob, blobDigest);
  cleanups.push(() => floor.stop());

  const paths = {
    tag: '/v2/library/small/manifests/v1',
    digest: `/v2/library/small/manifests/${image.manifestDigest}`,
    blob: `/v2/library/small/blobs/${blobDigest}`,
  };
  // Warm both caches: the manifest by tag and the blob, until the mirror's blob row is ready.
  for (const base of [mirror.url, proxy.url]) {
    const m = await fetch(base + paths.tag, { headers: { accept: ACCEPT } });
    const b = await fetch(base + paths.blob);
    if (!m.ok || !Buffer.from(await b.arrayBuffer()).equals(blob)) throw new Error(`${base} did not serve the image: ${m.status} ${b.status}`);
    await m.arrayBuffer();
  }
  const { db, close } = await openDatabase(`file:${join(scratch, 'mirror', 'pullthrough.db')}`);
  try {
    await until(async () => (await db.select().from(blobs).where(eq(blobs.digest, blobDigest)))[0]?.state === 'ready', 60_000, 'the mirror stored the blob');
  } finally {
    close();
  }

  const cases: Array<[string, string, 'GET' | 'HEAD', Record<string, string>]> = [
    ['manifest by tag', paths.tag, 'GET', { accept: ACCEPT }],
    ['manifest by digest', paths.digest, 'GET', { accept: ACCEPT }],
    ['blob HEAD', paths.blob, 'HEAD', {}],
    ['64 KiB blob GET', paths.blob, 'GET', {}],
  ];
  const measured = async (base: string, path: string, method: 'GET' | 'HEAD', headers: Record<string, string>) => {
    await load(base + path, method, headers, WARMUP_SECONDS);
    return load(base + path, method, headers);
  };
  for (const [what, path, method, headers] of cases) {
    const ours = await measured(mirror.url, path, method, headers);
    const ceiling = await measured(bare.url, path, method, headers);
    const framework = await measured(floor.url, path, method, headers);
    const theirs = await measured(proxy.url, path, method, headers);
    const share = ours.rps / ceiling.rps;
    const target = what.startsWith('64 KiB') ? `vs distribution ${(ours.rps / theirs.rps).toFixed(2)}×` : `target ≥ 50% of bare: ${share >= 0.5 ? 'met' : 'MISSED'}`;
    report(`warm ${what}, ${CONNECTIONS} connections: pullthrough`, `${describe(ours)} = ${(share * 100).toFixed(0)}% of bare`, target);
    report(`warm ${what}: bare node:http, same bytes`, describe(ceiling));
    report(`warm ${what}: a bare Hono route on @hono/node-server`, `${describe(framework)} = ${((framework.rps / ceiling.rps) * 100).toFixed(0)}% of bare; pullthrough at ${((ours.rps / framework.rps) * 100).toFixed(0)}% of it`);
    report(`warm ${what}: distribution proxy`, describe(theirs));
  }
  report('server peak RSS over the warm request runs', `${(await hwmOf(mirror)).toFixed(0)} MB`);
}

await runBench(main);
