// Every test image through the real server on Ceph RGW with presigned redirects, pulled by
// skopeo (cold, then warm), podman and containerd's ctr; digests must equal the upstream's
// and warm pulls must not ask the upstream for any blob.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListMultipartUploadsCommand, type S3Client } from '@aws-sdk/client-s3';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { blobs } from '../../schema/blobs.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, pushIndex } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';
import { skopeoPull, podmanWithMirror, containerdWithMirror } from '../setup/clients.ts';

interface TestImage {
  name: string;
  digest: string;
  index?: boolean;
  blobs: string[];
}

let registry: Registry;
let server: Server;
let dir: string;
let s3: { client: S3Client; bucket: string } | undefined;
const images: TestImage[] = [];

before(async () => {
  registry = await startRegistry();
  const plain = (name: string, built: { manifestDigest: string; configDigest: string; layers: Array<{ digest: string }> }): TestImage => ({
    name,
    digest: built.manifestDigest,
    blobs: [built.configDigest, ...built.layers.map((l) => l.digest)],
  });
  // Distinct content per image: podman keys images by config, so shared configs would alias.
  const two = (name: string): Array<Record<string, string | Buffer>> => [{ 'etc/os-release': `ID=${name}\n` }, { 'usr/lib/data.bin': randomBytes(1_000_000) }];
  images.push(plain('library/small:1', await pushImage(registry, 'library/small', '1', two('small'))));
  const docker = await pushImage(registry, 'library/docker', '1', two('docker'), { format: 'v2s2' });
  assert.equal(docker.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
  images.push(plain('library/docker:1', docker));
  images.push(plain('library/zstd:1', await pushImage(registry, 'library/zstd', '1', two('zstd'), { compression: 'zstd' })));
  const multi = await pushIndex(registry, 'library/multi', '1', [
    { platform: { os: 'linux', architecture: 'amd64' }, layerFiles: [{ arch: 'amd64' }] },
    { platform: { os: 'linux', architecture: 'arm64' }, layerFiles: [{ arch: 'arm64' }] },
  ]);
  images.push({ name: 'library/multi:1', digest: multi.manifestDigest, index: true, blobs: multi.images.flatMap((i) => [i.configDigest, ...i.layers.map((l) => l.digest)]) });
  images.push(plain('library/big:1', await pushImage(registry, 'library/big', '1', [{ 'etc/big': 'big\n' }, { 'big.bin': randomBytes(200 * 1024 * 1024) }])));
  dir = await mkdtemp(join(tmpdir(), 'pt-clients-'));
  s3 = await s3TestBucket('clients');
  const storage = s3 ? { ...s3ServerEnv(s3.bucket), BLOB_DELIVERY: 'redirect' } : {};
  server = await startServer({ DATA_DIR: join(dir, 'data'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }), ...storage });
});
after(async () => {
  await server?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const layoutDir = (pass: string, image: TestImage) => join(dir, pass, image.name.replace(/[/:]/g, '_'));
const upstreamBlobGets = () => registry.requests().filter((r) => r.method === 'GET' && r.path.includes('/blobs/')).length;

test('skopeo pulls every image cold with upstream digests; all blobs are ingested; warm pulls ask the upstream for no blob', async () => {
  for (const image of images) {
    assert.equal(await skopeoPull(server.host, image.name, layoutDir('cold', image), image.index), image.digest, image.name);
  }
  const { db, close } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`);
  try {
    const wanted = new Set(images.flatMap((i) => i.blobs));
    await until(async () => (await db.select().from(blobs)).filter((b) => b.state === 'ready' && wanted.has(b.digest)).length === wanted.size, 120_000, 'ingest of every blob');
  } finally {
    close();
  }
  if (s3) {
    const open = await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }));
    assert.equal(open.Uploads?.length ?? 0, 0, 'no multipart upload left open');
  }
  const before = upstreamBlobGets();
  for (const image of images) {
    assert.equal(await skopeoPull(server.host, image.name, layoutDir('warm', image), image.index), image.digest, image.name);
  }
  assert.equal(upstreamBlobGets(), before, 'warm pulls make no upstream blob request');
});

test('a warm blob GET is a presigned redirect to the bucket that serves the exact bytes', { skip: !process.env.S3_TEST_ENDPOINT }, async () => {
  const small = images[0]!;
  const digest = small.blobs[1]!;
  const res = await fetch(`${server.url}/v2/small/blobs/${digest}`, { redirect: 'manual' });
  assert.equal(res.status, 307);
  const location = res.headers.get('location')!;
  assert.ok(location.startsWith(process.env.S3_TEST_ENDPOINT!), location);
  assert.match(location, /X-Amz-Signature=/);
  const object = await fetch(location);
  assert.equal(object.status, 200);
  const { digestOf } = await import('../../core/oci/digest.ts');
  assert.equal(digestOf(new Uint8Array(await object.arrayBuffer())), digest);
});

test('podman (root, vfs, registries.conf mirror) pulls every image warm with upstream digests', async () => {
  const podman = await podmanWithMirror(server.host);
  try {
    const before = upstreamBlobGets();
    for (const image of images) assert.equal(await podman.pull(image.name), image.digest, image.name);
    assert.equal(upstreamBlobGets(), before, 'no upstream blob request');
  } finally {
    await podman.remove();
  }
});

test('containerd ctr (hosts.toml mirror with ?ns=docker.io) pulls every image warm with upstream digests', async () => {
  const containerd = await containerdWithMirror(server.host);
  try {
    const before = upstreamBlobGets();
    for (const image of images) assert.equal(await containerd.pull(image.name, image.index), image.digest, image.name);
    assert.equal(upstreamBlobGets(), before, 'no upstream blob request');
    assert.match(server.output(), /"path":"\/v2\/library\/small\/manifests\/[^"]*\?ns=docker\.io"/, 'containerd asked the mirror with ?ns=docker.io');
  } finally {
    await containerd.stop();
  }
});
