// Test images built by hand as OCI layouts (tar, gzip or zstd, JSON) and pushed into the
// real upstream registry with skopeo. What a helper returns is read back from the
// registry, so it is what clients will see, whatever skopeo converted on the way.
import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, readFile, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync, constants } from 'node:zlib';
import { digestOf } from '../../core/oci/digest.ts';
import { parseManifest, type Platform } from '../../core/oci/manifest.ts';
import type { Registry } from './registry.ts';

const run = promisify(execFile);

export type Compression = 'gzip' | 'zstd' | 'none';

const LAYER_MEDIA_TYPE: Record<Compression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

/** A layer: files by path (a minimal tar is made of them), or a whole tar built elsewhere. */
export type LayerSpec = Record<string, string | Buffer> | { tar: Buffer };
const tarOfLayer = (spec: LayerSpec): Buffer => (Buffer.isBuffer(spec.tar) ? spec.tar : tarOf(spec as Record<string, string | Buffer>));

export interface BuiltImage {
  manifestDigest: string;
  mediaType: string;
  configDigest: string;
  layers: Array<{ digest: string; size: number; mediaType: string }>;
}

export interface BuiltIndex {
  manifestDigest: string;
  mediaType: string;
  images: BuiltImage[];
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

/** An OCI image layout under construction in a temp dir. */
class Layout {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
  }

  static async create(): Promise<Layout> {
    const layout = new Layout(await mkdtemp(join(tmpdir(), 'pt-image-')));
    await mkdir(join(layout.dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(layout.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    return layout;
  }

  async put(bytes: Buffer): Promise<{ digest: string; size: number }> {
    const digest = digestOf(bytes);
    await writeFile(join(this.dir, 'blobs', 'sha256', digest.slice(7)), bytes);
    return { digest, size: bytes.length };
  }

  async compress(tar: Buffer, compression: Compression): Promise<Buffer> {
    if (compression === 'none') return tar;
    if (compression === 'gzip') return gzipSync(tar, { level: constants.Z_BEST_SPEED });
    // Node 20 has no zstd, and skopeo 1.9 cannot recompress to zstd: use the zstd CLI.
    const file = join(this.dir, 'layer.tar');
    await writeFile(file, tar);
    await run('zstd', ['-q', '-f', '--rm', file, '-o', `${file}.zst`]);
    const bytes = await readFile(`${file}.zst`);
    await rm(`${file}.zst`);
    return bytes;
  }

  /** Writes layers, config and manifest of one image; returns the manifest's descriptor. */
  async image(layerFiles: LayerSpec[], compression: Compression, platform: Platform) {
    const layers = [];
    const diffIds: string[] = [];
    for (const files of layerFiles) {
      const tar = tarOfLayer(files);
      diffIds.push(digestOf(tar));
      layers.push({ mediaType: LAYER_MEDIA_TYPE[compression], ...(await this.put(await this.compress(tar, compression))) });
    }
    const config = await this.put(Buffer.from(JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: diffIds }, config: {} })));
    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers,
    };
    return { mediaType: manifest.mediaType, ...(await this.put(Buffer.from(JSON.stringify(manifest)))), platform };
  }

  async tag(descriptor: { mediaType: string; digest: string; size: number }, tag: string): Promise<void> {
    const ref = { ...descriptor, annotations: { 'org.opencontainers.image.ref.name': tag } };
    await writeFile(join(this.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [ref] }));
  }

  async push(registry: Registry, name: string, tag: string, args: string[]): Promise<void> {
    await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', ...args, `oci:${this.dir}:${tag}`, `docker://${registry.host}/${name}:${tag}`]);
  }

  remove(): Promise<void> {
    return rm(this.dir, { recursive: true, force: true });
  }
}

/** A manifest exactly as the registry serves it (`skopeo inspect --raw`), and its digest. */
async function fetchManifest(registry: Registry, name: string, reference: string, creds?: string) {
  const ref = reference.includes(':') ? `${name}@${reference}` : `${name}:${reference}`;
  const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', ...(creds ? ['--creds', creds] : []), `docker://${registry.host}/${ref}`], {
    encoding: 'buffer',
    maxBuffer: 8 * 1024 * 1024,
  });
  const bytes = new Uint8Array(stdout);
  return { digest: digestOf(bytes), parsed: parseManifest(bytes, undefined) };
}

async function readImage(registry: Registry, name: string, reference: string, creds?: string): Promise<BuiltImage> {
  const { digest, parsed } = await fetchManifest(registry, name, reference, creds);
  if (parsed.kind !== 'image') throw new Error(`${name}:${reference} is not an image manifest`);
  return {
    manifestDigest: digest,
    mediaType: parsed.mediaType,
    configDigest: parsed.config.digest,
    layers: parsed.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
  };
}

export interface ImageOptions {
  /** How every layer is compressed (default gzip). */
  compression?: Compression;
  /** `v2s2` has skopeo convert to a Docker schema 2 manifest on the way. */
  format?: 'oci' | 'v2s2';
  platform?: Platform;
  /** `user:password` for a registry with authentication. */
  creds?: string;
}

/** Builds an image with one layer per entry of `layerFiles` and pushes it as `name:tag`. */
export async function pushImage(
  registry: Registry,
  name: string,
  tag: string,
  layerFiles: LayerSpec[],
  options: ImageOptions = {},
): Promise<BuiltImage> {
  const layout = await Layout.create();
  try {
    const manifest = await layout.image(layerFiles, options.compression ?? 'gzip', options.platform ?? { os: 'linux', architecture: 'amd64' });
    await layout.tag(manifest, tag);
    const creds = options.creds ? ['--dest-creds', options.creds] : [];
    await layout.push(registry, name, tag, [...creds, ...(options.format === 'v2s2' ? ['--format', 'v2s2'] : ['--preserve-digests'])]);
  } finally {
    await layout.remove();
  }
  return readImage(registry, name, tag, options.creds);
}

/** Builds one image per platform, an OCI index over them, and pushes all as `name:tag`. */
export async function pushIndex(
  registry: Registry,
  name: string,
  tag: string,
  platforms: Array<{ platform: Platform; layerFiles: LayerSpec[] }>,
): Promise<BuiltIndex> {
  const layout = await Layout.create();
  try {
    const manifests = [];
    for (const { platform, layerFiles } of platforms) manifests.push(await layout.image(layerFiles, 'gzip', platform));
    const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests };
    const descriptor = { mediaType: index.mediaType, ...(await layout.put(Buffer.from(JSON.stringify(index)))) };
    await layout.tag(descriptor, tag);
    await layout.push(registry, name, tag, ['--all', '--preserve-digests']);
  } finally {
    await layout.remove();
  }
  const { digest, parsed } = await fetchManifest(registry, name, tag);
  if (parsed.kind !== 'index') throw new Error(`${name}:${tag} is not an index`);
  const images = [];
  for (const child of parsed.manifests) images.push(await readImage(registry, name, child.digest));
  return { manifestDigest: digest, mediaType: parsed.mediaType, images };
}

/** A blob's bytes straight from the registry, checked against its digest. */
export async function upstreamBlob(registry: Registry, name: string, digest: string): Promise<Buffer> {
  const res = await fetch(`${registry.url}/v2/${name}/blobs/${digest}`);
  if (!res.ok) throw new Error(`registry answered ${res.status} for blob ${digest}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  if (digestOf(bytes) !== digest) throw new Error(`blob ${digest} does not match its digest`);
  return bytes;
}
