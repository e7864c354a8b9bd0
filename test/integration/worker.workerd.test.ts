// The Workers build inside workerd (the deploy bundle, queues delivered by Miniflare) on
// the same real components as Node: Debian's registry upstream (behind the fault proxy),
// Ceph RGW, and libSQL over HTTP (the Hrana test server), as Turso would serve it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { openDatabase, type Database } from '../../core/adapters/libsql.ts';
import { blobs } from '../../schema/blobs.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startFaultyProxy } from '../setup/faulty-proxy.ts';
import { startHranaServer, type HranaServer } from '../setup/hrana-server.ts';
import { s3TestBucket } from '../setup/s3.ts';
import { until } from '../setup/process.ts';
import { startLocalWorker, type LocalWorker } from '../setup/worker.ts';
import { watchIsolateMemory } from '../setup/isolate-memory.ts';
import { readyPlan } from '../setup/rootfs.ts';

const skip = !process.env.S3_TEST_ENDPOINT && 'needs Ceph RGW (npm test starts it)';
let dir: string;
let registry: Registry;
let proxy: Awaited<ReturnType<typeof startFaultyProxy>>;
let hrana: HranaServer;
let s3: { client: S3Client; bucket: string };
let db: Database;
let closeDb: () => void;
let worker: LocalWorker;
let small: BuiltImage;
let multipart: BuiltImage;
let big: BuiltImage;
let zstd: BuiltImage;
let joined: BuiltImage;
let resumed: BuiltImage;

before(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), 'pt-worker-'));
  registry = await startRegistry();
  small = await pushImage(registry, 'library/small', '1', [{ 'etc/hello': 'from workerd\n' }, { 'usr/lib/data': randomBytes(300_000) }]);
  multipart = await pushImage(registry, 'library/multipart', '1', [{ 'data.bin': randomBytes(12 * 1024 * 1024) }]);
  big = await pushImage(registry, 'library/big', '1', [{ 'big.bin': randomBytes(200 * 1024 * 1024) }]);
  resumed = await pushImage(registry, 'library/resumed', '1', [{ 'data.bin': randomBytes(6 * 1024 * 1024) }]);
  joined = await pushImage(registry, 'library/joined', '1', [{ 'data.bin': randomBytes(12 * 1024 * 1024) }]);
  zstd = await pushImage(registry, 'library/zstd', '1', [{ 'etc/hello': 'zstd in workerd\n' }, { 'usr/lib/data.bin': randomBytes(3_000_000) }], { compression: 'zstd' });
  proxy = await startFaultyProxy(registry.url);
  hrana = await startHranaServer(join(dir, 'turso.sqlite'));
  ({ db, close: closeDb } = await openDatabase(hrana.url, hrana.authToken)); // migrations, as drizzle-kit would apply them
  s3 = (await s3TestBucket('worker'))!;
  worker = await startLocalWorker({
    inspector: true, // to read the isolate's memory
    persistDir: join(dir, 'wrangler-state'),
    vars: {
      ...workerVars(hrana),
      BLOB_DELIVERY: 'redirect',
      INGEST_PART_SIZE_BYTES: String(5 * 1024 * 1024),
      INGEST_MAX_ATTEMPTS: '2',
    },
  });
});
after(async () => {
  await worker?.dispose();
  closeDb?.();
  await hrana?.stop();
  await proxy?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A Worker's variables on this database, the test bucket and the faulty proxy in front of the registry. */
const workerVars = (database: HranaServer, bucket = s3.bucket): Record<string, string> => ({
  LIBSQL_URL: database.url,
  LIBSQL_AUTH_TOKEN: database.authToken,
  S3_ENDPOINT: process.env.S3_TEST_ENDPOINT!,
  S3_BUCKET: bucket,
  S3_REGION: 'us-east-1',
  S3_ACCESS_KEY_ID: process.env.S3_TEST_ACCESS_KEY_ID!,
  S3_SECRET_ACCESS_KEY: process.env.S3_TEST_SECRET_ACCESS_KEY!,
  UPSTREAMS: JSON.stringify({ 'docker.io': { url: proxy.url } }),
});

const keyOf = (digest: string) => `blobs/sha256/${digest.slice(7)}`;
const rowOf = async (digest: string) => (await db.select().from(blobs).where(eq(blobs.digest, digest)))[0];
const upstreamBlobGets = () => registry.requests().filter((r) => r.method === 'GET' && r.path.includes('/blobs/')).length;
const openUploads = async (key: string) => ((await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }))).Uploads ?? []).filter((u) => u.Key === key).length;

async function bucketDigest(key: string): Promise<string> {
  const object = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
  const hash = createHash('sha256');
  for await (const chunk of object.Body as AsyncIterable<Uint8Array>) hash.update(chunk);
  return `sha256:${hash.digest('hex')}`;
}

const waitReady = (digests: string[], what: string) => until(async () => (await Promise.all(digests.map(rowOf))).every((r) => r?.state === 'ready'), 120_000, what);

test('a cold pull through the Worker enqueues ingest; the queue consumer stores verified blobs; warm pulls come from the bucket (redirect, then stream)', { skip, timeout: 180_000 }, async () => {
  const manifest = await fetch(new URL('/v2/small/manifests/1', worker.url));
  assert.equal(manifest.status, 200);
  assert.equal(manifest.headers.get('docker-content-digest'), small.manifestDigest);
  const layer = small.layers[1]!;
  const cold = await fetch(new URL(`/v2/small/blobs/${layer.digest}`, worker.url));
  assert.equal(cold.status, 200);
  assert.equal(createHash('sha256').update(new Uint8Array(await cold.arrayBuffer())).digest('hex'), layer.digest.slice(7));

  const digests = [small.configDigest, ...small.layers.map((l) => l.digest)];
  await waitReady(digests, 'queue delivery to ingest every blob');
  for (const d of digests) assert.equal(await bucketDigest(keyOf(d)), d, `${d} in the bucket`);

  const before = upstreamBlobGets();
  const redirect = await fetch(new URL(`/v2/small/blobs/${layer.digest}`, worker.url), { redirect: 'manual' });
  assert.equal(redirect.status, 307);
  const location = redirect.headers.get('location')!;
  assert.ok(location.startsWith(process.env.S3_TEST_ENDPOINT!), location);
  assert.equal(createHash('sha256').update(new Uint8Array(await (await fetch(location)).arrayBuffer())).digest('hex'), layer.digest.slice(7));

  await worker.setVars({ BLOB_DELIVERY: 'stream' });
  const streamed = await fetch(new URL(`/v2/small/blobs/${layer.digest}`, worker.url));
  assert.equal(streamed.status, 200);
  assert.equal(createHash('sha256').update(new Uint8Array(await streamed.arrayBuffer())).digest('hex'), layer.digest.slice(7));
  const range = await fetch(new URL(`/v2/small/blobs/${layer.digest}`, worker.url), { headers: { range: 'bytes=0-9' } });
  assert.equal(range.status, 206);
  assert.equal((await range.arrayBuffer()).byteLength, 10);
  assert.equal(upstreamBlobGets(), before, 'warm pulls ask the upstream for no blob');
});

test('concurrent cold GETs through the Worker, late ones included, are fed from one upstream transfer: every byte to each, the blob ends in the bucket', { skip, timeout: 120_000 }, async () => {
  const layer = joined.layers[0]!;
  assert.equal((await fetch(new URL('/v2/joined/manifests/1', worker.url))).status, 200);
  const gets = () => registry.requests().filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${layer.digest}`)).length;
  const before = gets();
  const read = async () => {
    const res = await fetch(new URL(`/v2/joined/blobs/${layer.digest}`, worker.url), { redirect: 'manual' });
    assert.equal(res.status, 200);
    return createHash('sha256').update(new Uint8Array(await res.arrayBuffer())).digest('hex');
  };
  proxy.fault = 'slow';
  try {
    const early = [read(), read()];
    await until(async () => (await rowOf(layer.digest))?.state === 'fetching', 30_000, 'the transfer to start');
    const late = [read(), read()];
    assert.deepEqual(await Promise.all([...early, ...late]), Array(4).fill(layer.digest.slice(7)));
  } finally {
    proxy.fault = 'none';
  }
  await waitReady([layer.digest], 'the blob to be published');
  assert.equal(await bucketDigest(keyOf(layer.digest)), layer.digest);
  // The registry logs a request once it has finished: a sentinel request flushes the log.
  const sentinel = `/v2/library/joined/tags/list?sentinel=${Math.random()}`;
  await fetch(`${registry.url}${sentinel}`).then((r) => r.arrayBuffer());
  await until(async () => registry.requests().some((r) => r.path === sentinel), 10_000, 'the registry log');
  assert.equal(gets() - before, 1, 'one upstream GET for four clients and the queue consumer');
  const staged = (await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: `_staging/${keyOf(layer.digest)}/` }))).Contents ?? [];
  assert.deepEqual(staged, [], 'no staged chunk left');
});

test('a cut upstream that ignores Range: the Worker fetches the body again from 0, compares the bytes it holds, and the client gets every byte', { skip, timeout: 120_000 }, async () => {
  const layer = resumed.layers[0]!;
  assert.equal((await fetch(new URL('/v2/resumed/manifests/1', worker.url))).status, 200);
  // The layer's body only: the queue may be fetching the image's config meanwhile.
  proxy.cuts = [0.5];
  proxy.cutsOnly = layer.digest;
  proxy.ignoreRange = true;
  proxy.blobRanges = [];
  try {
    const res = await fetch(new URL(`/v2/resumed/blobs/${layer.digest}`, worker.url), { redirect: 'manual' });
    assert.equal(res.status, 200);
    assert.equal(createHash('sha256').update(new Uint8Array(await res.arrayBuffer())).digest('hex'), layer.digest.slice(7));
    await waitReady([layer.digest], 'the blob to be published');
  } finally {
    proxy.cuts = [];
    proxy.cutsOnly = undefined;
    proxy.ignoreRange = false;
  }
  assert.equal(await bucketDigest(keyOf(layer.digest)), layer.digest);
  assert.ok(proxy.blobRanges.some((r) => r !== undefined && /^bytes=\d+-$/.test(r)), 'the resume asked for a range');
});

test('an upstream that lies: nothing is published or left staged, the consumer retries, then records the failure', { skip, timeout: 180_000 }, async () => {
  proxy.fault = 'corrupt';
  const layer = multipart.layers[0]!;
  try {
    assert.equal((await fetch(new URL('/v2/multipart/manifests/1', worker.url))).status, 200);
    await until(async () => (await rowOf(layer.digest))?.attempts === 2 && (await rowOf(layer.digest))?.state === 'failed', 60_000, 'two failed attempts');
  } finally {
    proxy.fault = 'none';
  }
  const row = await rowOf(layer.digest);
  assert.match(row?.error ?? '', /^UPSTREAM_INVALID: content does not match its digest/);
  await assert.rejects(s3.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: keyOf(layer.digest) })), { name: 'NotFound' });
  assert.equal(await openUploads(keyOf(layer.digest)), 0, 'no multipart upload open');
  assert.deepEqual((await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: `_staging/${keyOf(layer.digest)}/` }))).Contents ?? [], [], 'no staged chunk left');
  // The upstream recovers: pulling the manifest again queues the blob, and it lands.
  assert.equal((await fetch(new URL('/v2/multipart/manifests/1', worker.url))).status, 200);
  await waitReady([layer.digest], 'the retried ingest');
  assert.equal(await bucketDigest(keyOf(layer.digest)), layer.digest);
});

test('a 200 MB layer streams through the Worker consumer into the bucket, and is extracted, within the isolate memory limit', { skip, timeout: 300_000 }, async (t) => {
  const memory = await watchIsolateMemory(worker.inspectorUrl!);
  assert.equal((await fetch(new URL('/v2/big/manifests/1', worker.url))).status, 200);
  const layer = big.layers[0]!;
  await waitReady([layer.digest], 'the 200 MB ingest');
  assert.equal(await bucketDigest(keyOf(layer.digest)), layer.digest);
  assert.equal(await openUploads(keyOf(layer.digest)), 0);
  const ingestMemory = memory.mark();
  const plan = await readyPlan(worker.url, 'big:1', { deadlineMs: 240_000 });
  assert.equal(await bucketDigest(plan.layers[0]!.tar_key), plan.layers[0]!.diff_id);
  await memory.stop();
  // Production stops an isolate past 128 MB. What the consumer holds (5 MiB parts × 2 in
  // flight, the SDK, a decoder's window) is far below that; a buffered 200 MB layer could not be.
  t.diagnostic(`isolate memory: ingest ${ingestMemory}; extraction ${memory.describe()}`);
  assert.ok(memory.livePeak() > 0, 'the isolate was measured after a forced GC during the extraction');
  assert.ok(memory.livePeak() < 128 * 1024 * 1024, `isolate memory: ${memory.describe()}`);
});

test('the Worker extracts layers (gzip and zstd) through its queue consumer: layer.tar matches the diff_id, files read out of it', { skip, timeout: 180_000 }, async () => {
  for (const [image, built] of [['small', small], ['zstd', zstd]] as const) {
    const first = await fetch(new URL(`/api/rootfs/${image}:1`, worker.url));
    assert.ok(first.status === 202 || first.status === 200, `${first.status}`);
    await first.body?.cancel();
    const plan = await readyPlan(worker.url, `${image}:1`);
    assert.equal(plan.manifest, built.manifestDigest);
    for (const layer of plan.layers) {
      assert.equal(layer.state, 'ready');
      assert.equal(layer.compression, image === 'zstd' ? 'zstd' : 'gzip');
      assert.equal(await bucketDigest(layer.tar_key), layer.diff_id, `${image} ${layer.diff_id}`);
      const toc = await (await fetch(layer.toc_url)).json() as { entries: Array<{ path: string; digest?: string }> };
      assert.equal(toc.entries.length, layer.file_count);
    }
    const hello = await fetch(`${plan.layers[0]!.files_url}etc/hello`);
    assert.equal(hello.status, 200);
    assert.equal(await hello.text(), image === 'zstd' ? 'zstd in workerd\n' : 'from workerd\n');
  }
});

test('a bucket the Worker cannot use (missing bucket, wrong secret): the request that needs it is 503 UNAVAILABLE naming the variable, not 500 UNKNOWN', { skip, timeout: 180_000 }, async () => {
  const fresh = await pushImage(registry, 'library/nobucket', '1', [{ 'etc/x': 'never stored\n' }]);
  const cases: Array<[Record<string, string>, string, string]> = [
    [{ S3_BUCKET: `${s3.bucket}-missing` }, 'S3_BUCKET', 'no bucket of this name at the S3 endpoint'],
    [{ S3_SECRET_ACCESS_KEY: 'wrong-secret-never-shown' }, 'S3_SECRET_ACCESS_KEY', 'the secret key does not match the access key (requests are refused as wrongly signed)'],
  ];
  for (const [vars, variable, problem] of cases) {
    // A Worker of its own: a second patch of the shared one's vars did not take effect.
    const broken = await startLocalWorker({
      persistDir: join(dir, `wrangler-${variable}`),
      vars: { ...workerVars(hrana), ...vars },
    });
    try {
      // A manifest not stored yet is written to the bucket on its way to the client.
      const res = await fetch(new URL(`/v2/nobucket/manifests/${fresh.manifestDigest}`, broken.url));
      assert.equal(res.status, 503, variable);
      const text = await res.text();
      assert.deepEqual(JSON.parse(text), { errors: [{ code: 'UNAVAILABLE', message: 'the blob store cannot be used', detail: { variable, problem } }] });
      assert.doesNotMatch(text, /wrong-secret-never-shown/);
    } finally {
      await broken.dispose();
    }
  }
  const healthy = await fetch(new URL(`/v2/nobucket/manifests/${fresh.manifestDigest}`, worker.url));
  assert.equal(healthy.status, 200, 'the same request on the well-configured Worker');
});

test('the cron trigger runs garbage collection in the Worker: past CACHE_MAX_BYTES the least recently pulled blob leaves the bucket; the status page and /api/status count what the Worker served', { skip, timeout: 180_000 }, async () => {
  // A Worker, database and bucket of its own: two blobs stored two days ago, room for one.
  const gcHrana = await startHranaServer(join(dir, 'gc.sqlite'));
  const gcBucket = (await s3TestBucket('worker-gc'))!;
  const { db: gcDb, close: closeGcDb } = await openDatabase(gcHrana.url, gcHrana.authToken);
  const gcWorker = await startLocalWorker({
    persistDir: join(dir, 'wrangler-gc'),
    vars: { ...workerVars(gcHrana, gcBucket.bucket), CACHE_MAX_BYTES: '150', CACHE_LOW_WATER_PERCENT: '100' },
  });
  try {
    const seeded: string[] = [];
    for (const [i, ago] of [[0, 3], [1, 2]] as const) {
      const bytes = randomBytes(100);
      const hex = createHash('sha256').update(bytes).digest('hex');
      await gcBucket.client.send(new PutObjectCommand({ Bucket: gcBucket.bucket, Key: `blobs/sha256/${hex}`, Body: bytes }));
      const at = Date.now() - ago * 86400_000;
      await gcDb.insert(blobs).values({ digest: `sha256:${hex}`, state: 'ready', size: 100, storageKey: `blobs/sha256/${hex}`, upstream: 'docker.io', name: `library/seeded${i}`, createdAt: at, updatedAt: at, readyAt: at, lastPulledAt: at });
      seeded.push(`sha256:${hex}`);
    }
    const [older, newer] = seeded as [string, string];
    // What a deployed cron does: Miniflare's trigger runs the Worker's `scheduled` handler.
    const cron = await fetch(new URL('/cdn-cgi/local/scheduled', gcWorker.url));
    assert.equal(cron.status, 200, await cron.text());
    const state = async (digest: string) => (await gcDb.select().from(blobs).where(eq(blobs.digest, digest)))[0]?.state;
    assert.equal(await state(older), 'evicted');
    assert.equal(await state(newer), 'ready');
    const keys = ((await gcBucket.client.send(new ListObjectsV2Command({ Bucket: gcBucket.bucket }))).Contents ?? []).map((o) => o.Key);
    assert.deepEqual(keys, [keyOf(newer)], 'the evicted blob left the bucket');

    // The status: one manifest fetched through this Worker (a miss), one blob stored.
    assert.equal((await fetch(new URL('/v2/library/small/manifests/1', gcWorker.url), { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).status, 200);
    const status = (await (await fetch(new URL('/api/status', gcWorker.url))).json()) as { hour: { by_kind: { manifest: { misses: number } } }; stored: { blobs: number; cap_bytes: number }; upstreams?: Array<{ host: string; last_success_at: string | null }> };
    assert.equal(status.hour.by_kind.manifest.misses, 1);
    assert.deepEqual([status.stored.blobs, status.stored.cap_bytes], [1, 150]);
    // No users or tokens: everyone is anonymous and sees the details, as with /metrics.
    assert.ok(status.upstreams?.find((u) => u.host === 'docker.io')?.last_success_at, 'the upstream\'s last success, written by the Worker');
    const page = await fetch(new URL('/', gcWorker.url));
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<title>pullthrough status<\/title>[\s\S]*data-stat="hour-misses">1</);
  } finally {
    await gcWorker.dispose();
    closeGcDb();
    await gcHrana.stop();
  }
});

test('access control in workerd: without AUTH_RULES every request is 503 naming it; with users, the token flow (PBKDF2 and HMAC in Web Crypto) opens only what the rules grant', { skip, timeout: 180_000 }, async () => {
  const base = workerVars(hrana);
  const open = await startLocalWorker({ persistDir: join(dir, 'wrangler-norules'), vars: { ...base, AUTH_RULES: '' } });
  try {
    for (const path of ['/v2/', '/v2/library/small/manifests/1', '/token']) {
      const res = await fetch(new URL(path, open.url));
      assert.equal(res.status, 503, path);
      const body = (await res.json()) as { errors: Array<{ code: string; detail: { variable: string; fix: string } }> };
      assert.equal(body.errors[0]!.code, 'UNAVAILABLE');
      assert.equal(body.errors[0]!.detail.variable, 'AUTH_RULES');
      assert.match(body.errors[0]!.detail.fix, /set AUTH_RULES/);
    }
  } finally {
    await open.dispose();
  }
  const password = `pw-${randomBytes(6).toString('hex')}`;
  const { hashPassword } = await import('../../core/auth/password.ts');
  const ruled = await startLocalWorker({
    persistDir: join(dir, 'wrangler-rules'),
    vars: {
      ...base,
      AUTH_USERS: JSON.stringify({ alice: await hashPassword(password) }),
      AUTH_TOKEN_KEYS: `k1:${randomBytes(32).toString('base64url')}`,
      AUTH_RULES: 'pull docker.io/library/small to alice',
    },
  });
  try {
    const ping = await fetch(new URL('/v2/', ruled.url));
    assert.equal(ping.status, 401);
    assert.match(ping.headers.get('www-authenticate')!, /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token",service="pullthrough"$/);
    const basic = `Basic ${Buffer.from(`alice:${password}`).toString('base64')}`;
    const wrong = await fetch(new URL('/token?service=pullthrough&scope=repository:library/small:pull', ruled.url), { headers: { authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` } });
    assert.equal(wrong.status, 401);
    const issued = await fetch(new URL('/token?service=pullthrough&scope=repository:library/small:pull', ruled.url), { headers: { authorization: basic } });
    assert.equal(issued.status, 200);
    const { token } = (await issued.json()) as { token: string };
    const manifest = await fetch(new URL('/v2/library/small/manifests/1', ruled.url), { headers: { authorization: `Bearer ${token}`, accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(manifest.status, 200);
    assert.equal(manifest.headers.get('docker-content-digest'), small.manifestDigest);
    await manifest.body?.cancel();
    const anonymous = await fetch(new URL('/v2/library/small/manifests/1', ruled.url));
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
    const other = await fetch(new URL('/v2/library/zstd/manifests/1', ruled.url), { headers: { authorization: `Bearer ${token}` } });
    assert.equal(other.status, 401, 'a token for library/small only');
    assert.match(other.headers.get('www-authenticate')!, /error="insufficient_scope"/);
    await other.body?.cancel();
    // The cold-work limit through the COLD_RATE_LIMITER binding (wrangler.toml: 120 a
    // minute): tags nobody has, each an upstream question, until the binding says no. Its
    // windows are fixed minutes, so 400 (two windows at most, at this pace) make sure one
    // window sees more than 120 whatever minute boundary falls among them.
    let refused: Response | undefined;
    for (let i = 0; i < 400 && !refused; i++) {
      const res = await fetch(new URL(`/v2/library/small/manifests/nope-${i}`, ruled.url), { headers: { authorization: basic } });
      if (res.status === 429) refused = res;
      else assert.equal(res.status, 404, `request ${i}`);
      await res.body?.cancel();
    }
    assert.ok(refused, 'the binding refused past its limit');
    assert.equal(refused.headers.get('retry-after'), '60');
    const stored = await fetch(new URL(`/v2/library/small/manifests/${small.manifestDigest}`, ruled.url), { headers: { authorization: basic, accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(stored.status, 200, 'what is stored is still served');
    await stored.body?.cancel();
  } finally {
    await ruled.dispose();
  }
});

test('with the Cache API a warm manifest, by tag and by digest, costs the Worker no Turso round trip: it is served with the database gone, where a blob HEAD fails', { skip, timeout: 180_000 }, async () => {
  const image = await pushImage(registry, 'library/edge', '1', [{ 'etc/edge': 'served from the edge\n' }]);
  const edgeDb = await startHranaServer(join(dir, 'edge.sqlite'));
  (await openDatabase(edgeDb.url, edgeDb.authToken)).close(); // migrations
  // No in-isolate cache: whatever a request does not read from Turso comes from the Cache API.
  const edge = await startLocalWorker({
    persistDir: join(dir, 'wrangler-edge'),
    vars: { ...workerVars(edgeDb), MEMORY_CACHE_ENTRIES: '0' },
  });
  try {
    const accept = { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' };
    const get = (ref: string, method = 'GET') => fetch(new URL(`/v2/edge/manifests/${ref}`, edge.url), { method, headers: accept });
    // Cold (fetched, stored, recorded; its blobs queued), then, once the queue has stored
    // them, warm (from the bucket, nothing left to fetch): each fills the Cache API on its way.
    let bytes: Buffer | undefined;
    const pull = async (ref: string) => {
      const res = await get(ref);
      assert.equal(res.status, 200, await res.clone().text());
      bytes = Buffer.from(await res.arrayBuffer());
    };
    for (const ref of ['1', image.manifestDigest]) await pull(ref);
    const { db: edgeView, close: closeEdgeView } = await openDatabase(edgeDb.url, edgeDb.authToken);
    try {
      const ready = async (digest: string) => (await edgeView.select().from(blobs).where(eq(blobs.digest, digest)))[0]?.state === 'ready';
      await until(async () => (await ready(image.configDigest)) && (await ready(image.layers[0]!.digest)), 120_000, 'the image stored by the queue consumer');
    } finally {
      closeEdgeView();
    }
    for (const ref of ['1', image.manifestDigest]) await pull(ref);
    await edgeDb.stop();
    const head = await fetch(new URL(`/v2/edge/blobs/${image.configDigest}`, edge.url), { method: 'HEAD' });
    assert.ok(head.status >= 500, `a blob HEAD reads its row from the database, which is gone: ${head.status}`);
    for (const ref of ['1', image.manifestDigest]) {
      const res = await get(ref);
      assert.equal(res.status, 200, `${ref}: ${await res.clone().text()}`);
      assert.equal(res.headers.get('docker-content-digest'), image.manifestDigest);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), bytes, ref);
    }
  } finally {
    await edge.dispose();
    await edgeDb.stop();
  }
});
