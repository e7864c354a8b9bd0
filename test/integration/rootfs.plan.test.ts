// Pre-extracted layers for sandboxes, on real parts: Debian's registry upstream, the real
// server on Ceph RGW (presigned URLs) and on the filesystem store (pullthrough URLs), the
// `pullthrough rootfs` CLI, and umoci as the reference for what a root filesystem is.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, link, lstat, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq, inArray } from 'drizzle-orm';
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { openDatabase, type Database } from '../../core/adapters/libsql.ts';
import { blobs } from '../../schema/blobs.ts';
import { layers } from '../../schema/layers.ts';
import { parseToc } from '../../core/layer/toc.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, pushIndex, type BuiltImage, type LayerSpec } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';
import { rawTar } from '../setup/tar-writer.ts';
import { startFaultyProxy } from '../setup/faulty-proxy.ts';
import { gnuLayer, pullthroughRootfs, readyPlan, snapshot, systemNode, umociRootfs } from '../setup/rootfs.ts';
import { buildRootfs } from '../../cli/rootfs.ts';
import type { BatchLimits } from '../../cli/rootfs-apply.ts';

const skip = !process.env.S3_TEST_ENDPOINT && 'needs Ceph RGW (npm test starts it)';
let registry: Registry;
let dir: string;
let s3: { client: S3Client; bucket: string };
let server: Server;
let fsServer: Server;
let db: Database;
let closeDb: () => void;
const LONG = `long/${'d'.repeat(90)}/${'f'.repeat(120)}.txt`;
const hostileTag = randomBytes(4).toString('hex');
const images: Record<string, BuiltImage> = {};
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

const gnuTar = (name: string, format: 'pax' | 'gnu', build: (root: string) => Promise<void>, paths: string[]) => gnuLayer(join(dir, 'trees', name), format, build, paths);

/** Three layers that exercise what an unpacker must get right. */
async function trickyLayers(): Promise<LayerSpec[]> {
  const base = await gnuTar('base', 'pax', async (r) => {
    for (const d of ['etc', 'bin', 'usr/bin', 'usr/lib', 'opt/data', 'opt/keep', 'var/empty', 'tmp', 'remove-me/sub', `long/${'d'.repeat(90)}`]) await mkdir(join(r, d), { recursive: true });
    await writeFile(join(r, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    await writeFile(join(r, 'etc/shadow'), 'root:*::0:::::\n');
    await chmod(join(r, 'etc/shadow'), 0o640);
    await writeFile(join(r, 'bin/sh'), randomBytes(70_000));
    await chmod(join(r, 'bin/sh'), 0o755);
    await link(join(r, 'bin/sh'), join(r, 'bin/sh-hardlink'));
    await writeFile(join(r, 'usr/bin/su'), 'setuid\n');
    await chmod(join(r, 'usr/bin/su'), 0o4755);
    await writeFile(join(r, 'usr/bin/tool'), 'a file that becomes a directory\n');
    await writeFile(join(r, 'usr/lib/libx.so.1'), randomBytes(5000));
    await symlink('libx.so.1', join(r, 'usr/lib/libx.so'));
    await symlink('usr/lib', join(r, 'lib'));
    await writeFile(join(r, 'opt/data/a'), 'a\n');
    await writeFile(join(r, 'opt/data/b'), 'b\n');
    await writeFile(join(r, 'opt/keep/c'), 'c\n');
    await chmod(join(r, 'var/empty'), 0o700);
    await chmod(join(r, 'tmp'), 0o1777);
    await writeFile(join(r, 'remove-me/sub/file'), 'gone\n');
    await writeFile(join(r, 'remove-me-file'), 'gone\n');
    await writeFile(join(r, LONG), 'a name over 100 bytes\n');
    await symlink(`/${'t'.repeat(150)}`, join(r, 'long-symlink'));
  }, ['etc', 'etc/passwd', 'etc/shadow', 'bin', 'bin/sh', 'bin/sh-hardlink', 'usr', 'usr/bin', 'usr/bin/su', 'usr/bin/tool', 'usr/lib', 'usr/lib/libx.so.1', 'usr/lib/libx.so', 'lib',
    'opt', 'opt/data', 'opt/data/a', 'opt/data/b', 'opt/keep', 'opt/keep/c', 'var', 'var/empty', 'tmp', 'remove-me', 'remove-me/sub', 'remove-me/sub/file', 'remove-me-file',
    'long', `long/${'d'.repeat(90)}`, LONG, 'long-symlink']);
  const changes = await gnuTar('changes', 'gnu', async (r) => {
    for (const d of ['opt/data', 'etc', 'usr/bin/tool', 'newdir', 'lib']) await mkdir(join(r, d), { recursive: true });
    await writeFile(join(r, '.wh.remove-me'), '');
    await writeFile(join(r, '.wh.remove-me-file'), '');
    await writeFile(join(r, 'opt/data/.wh..wh..opq'), '');
    await writeFile(join(r, 'opt/data/new'), 'new\n');
    await writeFile(join(r, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\n');
    await writeFile(join(r, 'usr/bin/tool/inside'), 'now a directory\n');
    await writeFile(join(r, 'lib/extra.so'), 'through the lib -> usr/lib symlink\n');
    await mkdir(join(r, 'long', 'd'.repeat(90)), { recursive: true });
    await writeFile(join(r, LONG), 'the long name again, changed\n');
    await link(join(r, LONG), join(r, 'hard-to-long'));
  }, ['.wh.remove-me', '.wh.remove-me-file', 'opt/data', 'opt/data/.wh..wh..opq', 'opt/data/new', 'etc/passwd', 'usr/bin/tool', 'usr/bin/tool/inside', 'newdir', 'lib/extra.so', LONG, 'hard-to-long']);
  const more = await gnuTar('more', 'pax', async (r) => {
    await mkdir(join(r, 'etc'), { recursive: true });
    await writeFile(join(r, 'etc/.wh.shadow'), '');
    await writeFile(join(r, 'etc/hostname'), 'sandbox\n');
  }, ['etc/.wh.shadow', 'etc/hostname']);
  return [base, changes, more];
}

before(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), 'pt-rootfs-test-'));
  registry = await startRegistry();
  const two = (name: string): LayerSpec[] => [{ 'etc/os-release': `ID=${name}\n` }, { 'usr/lib/data.bin': randomBytes(1_000_000), 'usr/lib/other': 'x' }];
  images.gzip = await pushImage(registry, 'library/gzip', '1', two('gzip'));
  images.zstd = await pushImage(registry, 'library/zstd', '1', two('zstd'), { compression: 'zstd' });
  images.docker = await pushImage(registry, 'library/docker', '1', two('docker'), { format: 'v2s2' });
  images.tricky = await pushImage(registry, 'library/tricky', '1', await trickyLayers());
  images.plain = await pushImage(registry, 'library/plain', '1', [{ 'etc/plain': randomBytes(100_000) }], { compression: 'none' });
  images.hostile = await pushImage(registry, 'library/hostile', '1', [
    {
      tar: rawTar([
        { name: `../escape-${hostileTag}`, type: 'file', data: 'escaped through ..\n' },
        { name: `/abs-${hostileTag}`, type: 'file', data: 'escaped as an absolute path\n' },
        { name: 'evil', type: 'symlink', linkname: '/' },
        { name: `evil/tmp/pwned-${hostileTag}`, type: 'file', data: 'through a symlink to /\n' },
        { name: 'up', type: 'symlink', linkname: '../../../..' },
        { name: `up/pwned-up-${hostileTag}`, type: 'file', data: 'through a symlink to ..\n' },
        { name: 'hl', type: 'hardlink', linkname: '../../../../etc/passwd' },
        { name: 'hl-abs', type: 'hardlink', linkname: '/etc/passwd' },
        { name: 'fine', type: 'file', data: 'ok\n' },
      ]),
    },
  ]);
  images.owned = await pushImage(registry, 'library/owned', '1', [
    {
      tar: rawTar([
        { name: 'dev/', type: 'dir' },
        { name: 'dev/null', type: 'chardev', mode: 0o666, devmajor: 1, devminor: 3 },
        { name: 'home/', type: 'dir', uid: 1000, gid: 1000 },
        { name: 'home/owned', type: 'file', uid: 1000, gid: 1001, mode: 0o600, data: 'mine\n' },
        { name: 'bin/ping', type: 'file', mode: 0o755, data: 'ping\n', pax: { 'SCHILY.xattr.security.capability': Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) } },
      ]),
    },
  ]);
  const multi = await pushIndex(registry, 'library/multi', '1', [
    { platform: { os: 'linux', architecture: 'amd64' }, layerFiles: [{ arch: 'amd64\n' }, { 'bin/only-amd64': 'x' }] },
    { platform: { os: 'linux', architecture: 'arm64' }, layerFiles: [{ arch: 'arm64\n' }] },
  ]);
  images.multiAmd64 = multi.images[0]!;
  images.multiArm64 = multi.images[1]!;
  s3 = (await s3TestBucket('rootfs'))!;
  const upstreams = JSON.stringify({ 'docker.io': { url: registry.url } });
  server = await startServer({ DATA_DIR: join(dir, 'data'), UPSTREAMS: upstreams, ...s3ServerEnv(s3.bucket), BLOB_DELIVERY: 'redirect', JOB_LEASE_SECONDS: '10', INGEST_MAX_ATTEMPTS: '2' });
  fsServer = await startServer({ DATA_DIR: join(dir, 'fsdata'), UPSTREAMS: upstreams, EXTRACT: 'eager' });
  ({ db, close: closeDb } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`));
});

after(async () => {
  closeDb?.();
  await server?.stop();
  await fsServer?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const planUrl = (s: Server, image: string, platform?: string) => `${s.url}/api/rootfs/${image}${platform ? `?platform=${platform}` : ''}`;

const exists = (key: string) => s3.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key })).then(() => true, (e) => (e.name === 'NotFound' ? false : Promise.reject(e)));
const bucketBytes = async (key: string) => Buffer.from(await (await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }))).Body!.transformToByteArray());

test('a plan schedules extraction (202 with Retry-After), then lists every layer ready with presigned URLs; the bucket holds layer.tar and toc.json', { skip }, async () => {
  const first = await fetch(planUrl(server, 'library/gzip:1'));
  assert.equal(first.status, 202);
  assert.equal(first.headers.get('retry-after'), '2');
  const pending = (await first.json()) as any;
  assert.deepEqual(pending.layers.map((l: any) => l.state), ['pending', 'pending']);
  assert.equal(pending.manifest, images.gzip!.manifestDigest);
  // One extract job per layer however often the plan is polled.
  const queuedAt = async () => (await db.select().from(layers).where(inArray(layers.diffId, pending.layers.map((l: any) => l.diff_id)))).map((r) => r.queuedAt);
  const firstSent = await queuedAt();
  assert.ok(firstSent.every((t) => typeof t === 'number'), 'extract jobs were sent');
  await (await fetch(planUrl(server, 'library/gzip:1'))).arrayBuffer();
  assert.deepEqual(await queuedAt(), firstSent, 'a second poll sent none');

  const plan = await readyPlan(server.url, 'docker.io/library/gzip:1');
  assert.equal(plan.ready, true);
  assert.equal(plan.config, images.gzip!.configDigest);
  assert.deepEqual(plan.platform, { os: 'linux', architecture: 'amd64' });
  const config = JSON.parse((await bucketBytes(`blobs/sha256/${images.gzip!.configDigest.slice(7)}`)).toString());
  assert.deepEqual(plan.layers.map((l: any) => l.diff_id), config.rootfs.diff_ids);
  for (const [i, layer] of plan.layers.entries()) {
    assert.equal(layer.digest, images.gzip!.layers[i]!.digest);
    assert.equal(layer.compression, 'gzip');
    assert.equal(layer.media_type, 'application/vnd.oci.image.layer.v1.tar+gzip');
    const hex = layer.diff_id.slice(7);
    assert.equal(layer.tar_key, `layers/sha256/${hex}/layer.tar`);
    assert.equal(layer.toc_key, `layers/sha256/${hex}/toc.json`);
    const tar = await bucketBytes(layer.tar_key);
    assert.equal(`sha256:${sha256(tar)}`, layer.diff_id);
    assert.equal(tar.length, layer.uncompressed_size);
    // The presigned URLs read straight from the bucket.
    assert.match(layer.tar_url, new RegExp(`^${process.env.S3_TEST_ENDPOINT}/.*X-Amz-Signature=`));
    assert.deepEqual(Buffer.from(await (await fetch(layer.tar_url)).arrayBuffer()), tar);
    const tocText = await (await fetch(layer.toc_url)).text();
    assert.equal(`sha256:${sha256(Buffer.from(tocText))}`, layer.toc_digest);
    const toc = parseToc(tocText);
    assert.equal(toc.diff_id, layer.diff_id);
    assert.equal(toc.entries.length, layer.file_count);
    for (const e of toc.entries.filter((x) => x.type === 'file')) assert.equal(`sha256:${sha256(tar.subarray(e.offset, e.offset + e.size))}`, e.digest, e.path);
  }
  const [row] = await db.select().from(layers).where(eq(layers.diffId, plan.layers[1]!.diff_id));
  assert.equal(row?.state, 'ready');
  assert.equal(row?.compression, 'gzip');
  assert.equal(row?.fileCount, 2);
  assert.equal((await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }))).Uploads?.length ?? 0, 0);
});

const cases: Array<[string, string, string | undefined, string | undefined]> = [
  ['OCI gzip', 'library/gzip:1', undefined, undefined],
  ['zstd', 'library/zstd:1', undefined, undefined],
  ['Docker schema 2', 'library/docker:1', undefined, undefined],
  ['index, linux/amd64', 'library/multi:1', 'linux/amd64', undefined],
  ['index, linux/arm64', 'library/multi:1', 'linux/arm64', 'arm64'],
  ['whiteouts, opaque dirs, hard links, symlinks, long names, empty dirs', 'library/tricky:1', undefined, undefined],
];
for (const [what, image, platform, arch] of cases) {
  test(`pullthrough rootfs equals umoci unpack: ${what}`, { skip, timeout: 180_000 }, async () => {
    const slug = `${image.replace(/[/:]/g, '_')}${arch ?? ''}`;
    const ours = join(dir, 'ours', slug);
    const result = await pullthroughRootfs([image, ours, '--server', server.url, ...(platform ? ['--platform', platform] : [])]);
    assert.equal(result.code, 0, result.stderr);
    const reference = await umociRootfs(registry, image, join(dir, 'umoci', slug), { arch, recompress: image.includes('zstd') });
    const [got, want] = [await snapshot(ours), await snapshot(reference)];
    assert.deepEqual(got, want);
    assert.ok(Object.keys(want).length > 0, 'the comparison saw the files');
  });
}

// The CLI groups files into one Range request per batch; barriers keep whiteouts, hard
// links and replaced paths right however the batches fall. Smallest batches: every file
// is a request of its own. Small ones on the filesystem store (pullthrough URLs, Range
// served by the server itself).
const batchCases: Array<[string, () => Server, BatchLimits]> = [
  ['a file per request, S3', () => server, { bytes: 1, files: 1, gap: 0 }],
  ['three files per request, filesystem store', () => fsServer, { bytes: 64 * 1024, files: 3, gap: 512 }],
];
for (const [what, which, batch] of batchCases) {
  test(`rootfs with small Range batches still equals umoci unpack (${what})`, { skip, timeout: 180_000 }, async () => {
    const ours = join(dir, 'batches', what.replace(/\W+/g, '-'));
    const report = await buildRootfs({ server: which().url, image: 'library/tricky:1', dir: ours, batch, concurrency: 3 });
    assert.deepEqual(report.rejected, []);
    const reference = await umociRootfs(registry, 'library/tricky:1', join(dir, 'umoci-batches', what.replace(/\W+/g, '-')));
    assert.deepEqual(await snapshot(ours), await snapshot(reference));
  });
}

test('a layer.tar changed or cut short in the bucket after extraction: rootfs checks every file against its TOC and fails, naming it', { skip, timeout: 120_000 }, async () => {
  const plan = await readyPlan(server.url, 'library/gzip:1');
  const layer = plan.layers[1]!;
  const toc = parseToc(await (await fetch(layer.toc_url)).text());
  const data = toc.entries.find((e) => e.path === 'usr/lib/data.bin')!;
  const original = await bucketBytes(layer.tar_key);
  const put = (body: Uint8Array) => s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: layer.tar_key, Body: body }));
  try {
    const changed = Buffer.from(original);
    changed[data.offset + 1000] = changed[data.offset + 1000]! ^ 0xff;
    await put(changed);
    const tampered = await pullthroughRootfs(['library/gzip:1', join(dir, 'tampered'), '--server', server.url]);
    assert.equal(tampered.code, 1, tampered.stderr);
    assert.match(tampered.stderr, /pullthrough rootfs: usr\/lib\/data\.bin: content sha256:[0-9a-f]{64} does not match the TOC's sha256:[0-9a-f]{64}/);

    await put(original.subarray(0, data.offset + data.size / 2));
    const cut = await pullthroughRootfs(['library/gzip:1', join(dir, 'cut'), '--server', server.url]);
    assert.equal(cut.code, 1, cut.stderr);
    assert.match(cut.stderr, /pullthrough rootfs: the layer tar ended before usr\/lib\/data\.bin was complete/);
  } finally {
    await put(original);
  }
});

test('presigned URLs that expire during a long build are asked for again, pinned to the manifest being built', { skip, timeout: 180_000 }, async () => {
  // A bucket behind a hop that trickles bodies (~10 MB/s) and URLs that live 2 s: the
  // 40 MiB below take about 4 s, a file per Range request.
  const proxy = await startFaultyProxy(process.env.S3_TEST_ENDPOINT!);
  const bucket = (await s3TestBucket('rootfs-ttl'))!;
  const slow = await startServer({
    DATA_DIR: join(dir, 'ttl'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }),
    ...s3ServerEnv(bucket.bucket), S3_ENDPOINT: proxy.url, PRESIGN_TTL_SECONDS: '2', BLOB_DELIVERY: 'redirect',
  });
  try {
    const files = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`data/f${i}`, randomBytes(1024 * 1024)]));
    await pushImage(registry, 'library/ttl', '1', [files]);
    const plan = await readyPlan(slow.url, 'library/ttl:1');
    const lifetime = Date.parse((plan as { urls_expire_at?: string }).urls_expire_at ?? '') - Date.now();
    assert.ok(lifetime > 0 && lifetime <= 2000, `urls_expire_at is at most 2 s away (${lifetime} ms)`);
    proxy.fault = 'slowall';
    const target = join(dir, 'ttl-root');
    await buildRootfs({ server: slow.url, image: 'library/ttl:1', dir: target, batch: { bytes: 1, files: 1, gap: 0 }, concurrency: 1 });
    const tree = await snapshot(target);
    for (const [path, bytes] of Object.entries(files)) assert.equal(tree[path]?.sha256, sha256(bytes), path);
    assert.match(slow.output(), /"path":"\/api\/rootfs\/docker\.io\/library\/ttl@sha256:[0-9a-f]{64}","status":200/, 'the plan was asked for again by digest');
  } finally {
    proxy.fault = 'none';
    await slow.stop();
    await proxy.stop();
  }
});

test('the tricky image unpacks as OCI says (checked directly, not only against umoci)', { skip }, async () => {
  const tree = await snapshot(join(dir, 'ours', 'library_tricky_1'));
  for (const gone of ['remove-me', 'remove-me-file', 'opt/data/a', 'opt/data/b', 'etc/shadow']) assert.equal(tree[gone], undefined, gone);
  assert.equal(tree['opt/data/new']?.type, 'file');
  assert.equal(tree['opt/keep/c']?.type, 'file');
  assert.equal(tree['usr/bin/tool']?.type, 'dir');
  assert.equal(tree['usr/lib/extra.so']?.type, 'file', 'written through the lib -> usr/lib symlink');
  assert.deepEqual(tree.lib, { type: 'symlink', mode: 'n/a', link: 'usr/lib' });
  assert.equal(tree['usr/bin/su']?.mode, '4755');
  assert.equal(tree.tmp?.mode, '1777');
  assert.deepEqual(tree['var/empty'], { type: 'dir', mode: '0700' });
  assert.deepEqual(tree['bin/sh']?.links, ['bin/sh-hardlink']);
  assert.deepEqual(tree['hard-to-long']?.links, [LONG]);
  assert.equal(tree['long-symlink']?.link, `/${'t'.repeat(150)}`);
  assert.deepEqual(tree.newdir, { type: 'dir', mode: '0755' });
});

test('a hostile layer changes nothing outside the target; unsafe entries are rejected and reported', { skip }, async () => {
  const parent = join(dir, 'hostile');
  const target = join(parent, 'root');
  await mkdir(target, { recursive: true });
  const result = await pullthroughRootfs(['library/hostile:1', target, '--server', server.url]);
  assert.equal(result.code, 3, result.stderr);
  assert.match(result.stderr, new RegExp(`rejected: layer 1: \\.\\./escape-${hostileTag}: path leaves the root through \\.\\.`));
  assert.match(result.stderr, new RegExp(`rejected: layer 1: /abs-${hostileTag}: absolute path`));
  assert.match(result.stderr, /rejected: layer 1: hl: hard link to \.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd outside the root/);
  assert.match(result.stderr, /rejected: layer 1: hl-abs: hard link to \/etc\/passwd outside the root/);
  assert.match(result.stderr, /4 entries were rejected as unsafe/);
  assert.deepEqual(await readdir(parent), ['root']);
  for (const outside of [`/escape-${hostileTag}`, `/abs-${hostileTag}`, `/tmp/pwned-${hostileTag}`, `/pwned-up-${hostileTag}`, join(parent, `escape-${hostileTag}`)]) {
    assert.equal(existsSync(outside), false, outside);
  }
  // Symlinked parents are followed inside the target, as if it were `/`.
  const tree = await snapshot(target);
  assert.equal(tree[`tmp/pwned-${hostileTag}`]?.type, 'file');
  assert.equal(tree[`pwned-up-${hostileTag}`]?.type, 'file');
  assert.equal(tree.fine?.type, 'file');
  assert.equal(tree.hl, undefined);
});

test('a corrupted stored layer fails the diff_id check: the error is recorded and nothing is published', { skip }, async () => {
  const layer = images.plain!.layers[0]!;
  // Store the blob (verified), then corrupt it in the bucket behind pullthrough's back.
  assert.equal((await fetch(`${server.url}/v2/library/plain/manifests/1`)).status, 200);
  await until(async () => (await db.select().from(blobs).where(eq(blobs.digest, layer.digest)))[0]?.state === 'ready', 60_000, 'the plain layer ingest');
  assert.deepEqual(await db.select().from(layers).where(eq(layers.blobDigest, layer.digest)), [], 'on-demand: a pull alone extracts nothing');
  const key = `blobs/sha256/${layer.digest.slice(7)}`;
  const bytes = await bucketBytes(key);
  bytes[bytes.length - 2000] = bytes[bytes.length - 2000]! ^ 0xff; // inside the file's data, so the tar still parses
  await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: bytes }));

  let plan: any;
  await until(async () => {
    plan = await (await fetch(planUrl(server, 'library/plain:1'))).json();
    return plan.layers[0].state === 'failed';
  }, 60_000, 'the extract failure');
  const [entry] = plan.layers;
  assert.match(entry.error, /^LAYER_INVALID: the uncompressed layer does not match the diff_id in the image config/);
  assert.equal(await exists(entry.tar_key), false, 'no layer.tar');
  assert.equal(await exists(entry.toc_key), false, 'no toc.json');
  assert.equal((await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }))).Uploads?.length ?? 0, 0);
  // Not retried on the next plan: it would fail the same way.
  const again = await fetch(planUrl(server, 'library/plain:1'));
  assert.equal(again.status, 200);
  assert.equal(((await again.json()) as any).layers[0].state, 'failed');
  const tarRes = await fetch(`${server.url}/api/layers/docker.io/library/plain/${entry.diff_id}/tar`);
  assert.equal(tarRes.status, 404);
  assert.deepEqual(await tarRes.json(), {
    errors: [{ code: 'LAYER_UNKNOWN', message: 'layer is not extracted', detail: { diff_id: entry.diff_id, state: 'failed', error: entry.error } }],
  });
  const cli = await pullthroughRootfs(['library/plain:1', join(dir, 'plain-root'), '--server', server.url]);
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /layers cannot be extracted: .*LAYER_INVALID/);
});

test('PUBLIC_URL: behind a proxy, the plan hands out pullthrough URLs under the public prefix, not the request origin', { skip }, async () => {
  const proxied = await startServer({ DATA_DIR: join(dir, 'public'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }), PUBLIC_URL: 'https://mirror.example.com/', EXTRACT: 'eager' });
  try {
    const plan = await readyPlan(proxied.url, 'library/gzip:1');
    for (const layer of plan.layers) {
      const base = `https://mirror.example.com/api/layers/docker.io/library/gzip/${layer.diff_id}`;
      assert.deepEqual([layer.tar_url, layer.toc_url, layer.files_url], [`${base}/tar`, `${base}/toc`, `${base}/files/`]);
    }
  } finally {
    await proxied.stop();
  }
});

test('single files come out of a layer with one Range read: exact bytes, ranges, hard links; directories and unknown paths are clear errors', { skip }, async () => {
  // EXTRACT=eager on the filesystem server: pulling the manifest is enough.
  assert.equal((await fetch(`${fsServer.url}/v2/library/tricky/manifests/1`)).status, 200);
  const plan = await readyPlan(fsServer.url, 'library/tricky:1');
  const base = plan.layers[0]!;
  const changes = plan.layers[1]!;
  assert.equal(base.tar_url, `${fsServer.url}/api/layers/docker.io/library/tricky/${base.diff_id}/tar`, 'pullthrough URLs with the filesystem store, under the repository');
  const toc = parseToc(await (await fetch(base.toc_url)).text());
  const tar = Buffer.from(await (await fetch(base.tar_url)).arrayBuffer());
  const sh = toc.entries.find((e) => e.path === 'bin/sh')!;
  const file = (layer: any, path: string, init?: RequestInit) => fetch(`${layer.files_url}${path}`, init);

  const whole = await file(base, 'bin/sh');
  assert.equal(whole.status, 200);
  assert.equal(whole.headers.get('content-length'), String(sh.size));
  assert.equal(whole.headers.get('etag'), `"${sh.digest}"`);
  assert.equal(whole.headers.get('x-file-mode'), '0755');
  const body = Buffer.from(await whole.arrayBuffer());
  assert.deepEqual(body, tar.subarray(sh.offset, sh.offset + sh.size));
  assert.equal(`sha256:${sha256(body)}`, sh.digest);

  const part = await file(base, 'bin/sh', { headers: { range: 'bytes=100-199' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), `bytes 100-199/${sh.size}`);
  assert.deepEqual(Buffer.from(await part.arrayBuffer()), body.subarray(100, 200));
  assert.deepEqual(Buffer.from(await (await file(base, 'bin/sh-hardlink')).arrayBuffer()), body, 'a hard link reads its target');
  assert.equal(await (await file(base, LONG)).text(), 'a name over 100 bytes\n');
  assert.equal(await (await file(changes, LONG)).text(), 'the long name again, changed\n');
  assert.equal((await file(base, 'bin/sh', { method: 'HEAD' })).headers.get('content-length'), String(sh.size));

  const dirRes = await file(base, 'etc');
  assert.equal(dirRes.status, 404);
  assert.deepEqual(await dirRes.json(), { errors: [{ code: 'FILE_UNKNOWN', message: 'not a regular file', detail: { diff_id: base.diff_id, path: 'etc', type: 'dir' } }] });
  const missing = await file(base, 'no/such/file');
  assert.equal(missing.status, 404);
  assert.equal(((await missing.json()) as any).errors[0].code, 'FILE_UNKNOWN');
  const notExtracted = { code: 'LAYER_UNKNOWN', message: 'layer is not extracted' };
  const unknown = await fetch(`${fsServer.url}/api/layers/library/tricky/sha256:${'0'.repeat(64)}/files/etc/passwd`);
  assert.equal(unknown.status, 404);
  assert.deepEqual(await unknown.json(), { errors: [{ ...notExtracted, detail: { diff_id: `sha256:${'0'.repeat(64)}` } }] });
  // A layer of library/tricky through a repository that does not reach it answers as one that does not exist.
  for (const path of [`library/other/${base.diff_id}/tar`, `library/other/${base.diff_id}/toc`, `someone/private-thing/${base.diff_id}/files/bin/sh`]) {
    const probe = await fetch(`${fsServer.url}/api/layers/${path}`);
    assert.equal(probe.status, 404, path);
    assert.deepEqual(await probe.json(), { errors: [{ ...notExtracted, detail: { diff_id: base.diff_id } }] }, path);
  }
  const bad = await fetch(`${fsServer.url}/api/layers/library/tricky/sha256:nothex/toc`);
  assert.equal(bad.status, 400);
  assert.equal(((await bad.json()) as any).errors[0].code, 'DIGEST_INVALID');
  const tarRange = await fetch(base.tar_url, { headers: { range: `bytes=${sh.offset}-${sh.offset + 9}` } });
  assert.equal(tarRange.status, 206);
  assert.deepEqual(Buffer.from(await tarRange.arrayBuffer()), body.subarray(0, 10));
});

test('plan errors: a platform the index lacks, a malformed platform, an unknown image', { skip }, async () => {
  const none = await fetch(planUrl(server, 'library/multi:1', 'linux/s390x'));
  assert.equal(none.status, 404);
  assert.deepEqual(await none.json(), {
    errors: [{ code: 'PLATFORM_UNKNOWN', message: 'the image index has no manifest for this platform', detail: { platform: { os: 'linux', architecture: 's390x' }, available: ['linux/amd64', 'linux/arm64'] } }],
  });
  const malformed = await fetch(planUrl(server, 'library/multi:1', 'linux'));
  assert.equal(malformed.status, 400);
  assert.equal(((await malformed.json()) as any).errors[0].code, 'PLATFORM_INVALID');
  const unknown = await fetch(planUrl(server, 'library/nope:1'));
  assert.equal(unknown.status, 404);
  assert.equal(((await unknown.json()) as any).errors[0].code, 'MANIFEST_UNKNOWN');
});

test('EXTRACT=off: the plan reports layers absent and schedules nothing; rootfs says why it cannot build', { skip }, async () => {
  const off = await startServer({ DATA_DIR: join(dir, 'offdata'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }), EXTRACT: 'off' });
  try {
    const res = await fetch(planUrl(off, 'library/gzip:1'));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('retry-after'), null);
    const plan = (await res.json()) as any;
    assert.equal(plan.ready, false);
    assert.deepEqual(plan.layers.map((l: any) => l.state), ['absent', 'absent']);
    const cli = await pullthroughRootfs(['library/gzip:1', join(dir, 'off-root'), '--server', off.url]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /layers cannot be extracted: sha256:[0-9a-f]{64} absent/);
    const { db: offDb, close } = await openDatabase(`file:${join(dir, 'offdata', 'pullthrough.db')}`);
    try {
      const { jobs } = await import('../../schema/jobs.ts');
      assert.deepEqual((await offDb.select().from(jobs)).filter((j) => j.kind !== 'ingest'), [], 'no extract job');
    } finally {
      close();
    }
  } finally {
    await off.stop();
  }
});

test('ownership and device nodes: applied as root; as another user, devices are skipped with a warning and files are theirs; extended attributes are reported as not applied', { skip: skip || (process.getuid?.() !== 0 && 'needs root') }, async () => {
  const asRoot = join(dir, 'owned-root');
  const result = await pullthroughRootfs(['library/owned:1', asRoot, '--server', server.url]);
  assert.equal(result.code, 0, result.stderr);
  const dev = await lstat(join(asRoot, 'dev/null'));
  assert.ok(dev.isCharacterDevice());
  assert.equal(dev.rdev, (1 << 8) | 3);
  const owned = await lstat(join(asRoot, 'home/owned'));
  assert.deepEqual([owned.uid, owned.gid, owned.mode & 0o7777], [1000, 1001, 0o600]);
  assert.match(result.stderr, /skipped: layer 1: bin\/ping: extended attributes not applied: security\.capability/);
  assert.equal((await lstat(join(asRoot, 'bin/ping'))).mode & 0o7777, 0o755, 'the file itself is there');

  const nobody = { uid: 65534, gid: 65534 };
  // The test dir is root's (0700): nobody builds in a dir of its own.
  const parent = await mkdtemp(join(tmpdir(), 'pt-rootfs-nobody-'));
  try {
    await chown(parent, nobody.uid, nobody.gid);
    // Nor may nobody read the checkout, where the pinned Node and the bundle are, when it is
    // a clone in a 0700 directory: the machine's Node runs a copy of the bundle.
    const asNobody = await pullthroughRootfs(['library/owned:1', join(parent, 'root'), '--server', server.url], { as: nobody, node: systemNode()?.path, copyTo: parent });
    assert.equal(asNobody.code, 0, asNobody.stderr);
    assert.match(asNobody.stderr, /skipped: layer 1: dev\/null: chardev 1,3 needs root/);
    assert.match(asNobody.stderr, /skipped: layer 1: bin\/ping: extended attributes not applied: security\.capability/);
    assert.equal(existsSync(join(parent, 'root/dev/null')), false);
    const mine = await lstat(join(parent, 'root/home/owned'));
    assert.deepEqual([mine.uid, mine.gid, mine.mode & 0o7777], [65534, 65534, 0o600]);
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
