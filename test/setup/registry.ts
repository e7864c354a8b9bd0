// Test helpers that start real components: Debian's docker-registry (distribution) as
// the upstream, and hand-built OCI images pushed into it with skopeo.
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { digestOf } from '../../core/digest.ts';

const run = promisify(execFile);

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
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface BuiltImage {
  manifestDigest: string;
  configDigest: string;
  layers: Array<{ digest: string; size: number; bytes: Buffer }>;
}

/** A minimal tar with one regular file per entry (ustar headers, no external tools). */
export function tarOf(files: Record<string, string | Buffer>): Buffer {
  const blocks: Buffer[] = [];
  for (const [path, content] of Object.entries(files)) {
    const data = Buffer.isBuffer(content) ? content : Buffer.from(content);
    const h = Buffer.alloc(512);
    h.write(path, 0, 100);
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write('0', 156);
    h.write('ustar\0' + '00', 257);
    const sum = h.reduce((a, b) => a + b, 0);
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** Writes an OCI image layout of gzip layers and pushes it with skopeo as `name:tag`. */
export async function pushImage(registry: Registry, name: string, tag: string, layerFiles: Array<Record<string, string | Buffer>>): Promise<BuiltImage> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-image-'));
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (bytes: Buffer) => {
    const digest = digestOf(bytes);
    await writeFile(join(blobs, digest.slice(7)), bytes);
    return { digest, size: bytes.length };
  };
  const layers: BuiltImage['layers'] = [];
  const diffIds: string[] = [];
  for (const files of layerFiles) {
    const tar = tarOf(files);
    diffIds.push(digestOf(tar));
    const bytes = gzipSync(tar);
    layers.push({ ...(await put(bytes)), bytes });
  }
  const config = await put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds }, config: {} })));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
    }),
  );
  const m = await put(manifest);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, annotations: { 'org.opencontainers.image.ref.name': tag } }] }),
  );
  await run('skopeo', ['copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', `oci:${dir}:${tag}`, `docker://${registry.host}/${name}:${tag}`]);
  await rm(dir, { recursive: true, force: true });
  return { manifestDigest: m.digest, configDigest: config.digest, layers };
}
