// The one transfer per cold blob (core/cache/transfer.ts) on real components: Debian's
// registry behind a hop that slows, corrupts or cuts blob bodies, the app wired as Node
// wires it (libSQL file, filesystem store, spool).
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { blobs } from '../../schema/blobs.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, upstreamBlob, type BuiltImage } from '../setup/images.ts';
import { startFaultyProxy } from '../setup/faulty-proxy.ts';
import { createTestApp, type TestApp } from '../setup/app.ts';
import { ingestBlob } from '../../core/cache/ingest.ts';
import { until } from '../setup/process.ts';
import { s3TestBucket } from '../setup/s3.ts';
import { S3BlobStore } from '../../core/adapters/s3-store.ts';

let registry: Registry;
let proxy: Awaited<ReturnType<typeof startFaultyProxy>>;
let image: BuiltImage;
let layerBytes: Buffer;
let t: TestApp;

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/transfer', '1', [{ 'big.bin': randomBytes(6 * 1024 * 1024) }]);
  layerBytes = await upstreamBlob(registry, 'library/transfer', image.layers[0]!.digest);
  proxy = await startFaultyProxy(registry.url);
});
after(async () => {
  await t?.close();
  await proxy?.stop();
  await registry?.stop();
});
beforeEach(async () => {
  await t?.close();
  t = await createTestApp(proxy.url);
  proxy.fault = 'none';
  proxy.cuts = [];
  proxy.changeEtag = false;
  proxy.ignoreRange = false;
  // The manifest introduces the blob (its row), as a client's pull does first.
  assert.equal((await t.app.request('/v2/transfer/manifests/1')).status, 200);
});

const layer = () => image.layers[0]!;
const row = async () => (await t.db.select().from(blobs).where(eq(blobs.digest, layer().digest)))[0];
const get = () => t.app.request(`/v2/transfer/blobs/${layer().digest}`);

/** Upstream GETs of the layer so far, once the registry has logged every finished request. */
async function upstreamLayerGets(): Promise<number> {
  const sentinel = `/v2/library/transfer/tags/list?sentinel=${Math.random()}`;
  await fetch(`${registry.url}${sentinel}`).then((r) => r.arrayBuffer());
  await until(async () => registry.requests().some((r) => r.path === sentinel), 10_000, 'the registry log');
  return registry.requests().filter((r) => r.method === 'GET' && r.path === `/v2/library/transfer/blobs/${layer().digest}`).length;
}

/** A body read to its end, or the error that cut it. */
const readAll = async (res: Response): Promise<Buffer | Error> => {
  try {
    return Buffer.from(await res.arrayBuffer());
  } catch (e) {
    return e as Error;
  }
};

test('concurrent cold GETs, late joiners included, are fed from one upstream transfer, every byte to each; the blob ends stored', async () => {
  proxy.fault = 'slow';
  const before = await upstreamLayerGets();
  const first = Array.from({ length: 4 }, () => get());
  await until(async () => (await row())?.state === 'fetching', 10_000, 'the transfer to start');
  const firstAnswers = await Promise.all(first);
  // Joined while the transfer runs (it takes ~0.6 s through the slow hop).
  assert.equal((await row())?.state, 'fetching');
  const late = await Promise.all(Array.from({ length: 4 }, () => get()));
  for (const res of [...firstAnswers, ...late]) {
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(layer().size));
    assert.equal(res.headers.get('docker-content-digest'), layer().digest);
  }
  const bodies = await Promise.all([...firstAnswers, ...late].map(readAll));
  for (const body of bodies) assert.ok(Buffer.isBuffer(body) && body.equals(layerBytes), 'every byte, in order');
  await until(async () => (await row())?.state === 'ready', 10_000, 'the blob to be published');
  assert.equal((await upstreamLayerGets()) - before, 1, 'one upstream GET for eight clients');
  assert.equal(await t.store.stat(`blobs/sha256/${layer().digest.slice(7)}`).then((s) => s?.size), layer().size);
});

test('an upstream that serves wrong bytes: no client receives a complete body, nothing is stored, failed is recorded', async () => {
  proxy.fault = 'corrupt';
  const answers = await Promise.all(Array.from({ length: 3 }, () => get()));
  const bodies = await Promise.all(answers.map(readAll));
  for (const body of bodies) {
    assert.ok(body instanceof Error || body.length < layer().size, 'cut short, never the full length');
  }
  await until(async () => (await row())?.state === 'failed', 10_000, 'the failure to be recorded');
  assert.match((await row())?.error ?? '', /does not match its digest/);
  assert.equal(await t.store.stat(`blobs/sha256/${layer().digest.slice(7)}`), undefined);
});

test('an upstream that cuts the body at 30% and 60%: the transfer resumes with Range, every client gets every byte, 1.1x the blob at most is fetched', async () => {
  proxy.cuts = [0.3, 0.6];
  proxy.blobBytes = 0;
  proxy.blobRanges = [];
  const bodies = await Promise.all((await Promise.all(Array.from({ length: 3 }, () => get()))).map(readAll));
  for (const body of bodies) assert.ok(Buffer.isBuffer(body) && body.equals(layerBytes), 'every byte, in order');
  await until(async () => (await row())?.state === 'ready', 10_000, 'the blob to be published');
  const size = layer().size;
  // Each resume asks for the rest from what had arrived (at most the cut point: bytes in
  // flight when a connection drops may be lost with it).
  assert.equal(proxy.blobRanges.length, 3);
  assert.equal(proxy.blobRanges[0], undefined);
  const [from1, from2] = proxy.blobRanges.slice(1).map((r) => Number(/^bytes=(\d+)-$/.exec(r ?? '')?.[1]));
  assert.ok(from1! > 0.2 * size && from1! <= Math.floor(0.3 * size), `first resume from ${from1}`);
  assert.ok(from2! > 0.5 * size && from2! <= Math.floor(0.6 * size), `second resume from ${from2}`);
  assert.ok(proxy.blobBytes <= 1.1 * size, `${proxy.blobBytes} bytes fetched for a blob of ${size}`);
  assert.equal(await t.store.stat(`blobs/sha256/${layer().digest.slice(7)}`).then((s) => s?.size), size);
});

test('an upstream that ignores Range: the resumed body starts from 0, the bytes held are compared and skipped, the blob is stored', async () => {
  proxy.cuts = [0.5];
  proxy.ignoreRange = true;
  proxy.blobRanges = [];
  try {
    const body = await readAll(await get());
    assert.ok(Buffer.isBuffer(body) && body.equals(layerBytes));
    await until(async () => (await row())?.state === 'ready', 10_000, 'the blob to be published');
    assert.equal(proxy.blobRanges.length, 2);
    assert.match(proxy.blobRanges[1] ?? '', /^bytes=\d+-$/);
  } finally {
    proxy.ignoreRange = false;
  }
});

test('an object whose ETag changed on resume is asked for again from 0: the bytes held are compared, the blob is stored', async () => {
  proxy.cuts = [0.5];
  proxy.changeEtag = true;
  proxy.blobRanges = [];
  try {
    const body = await readAll(await get());
    assert.ok(Buffer.isBuffer(body) && body.equals(layerBytes));
    await until(async () => (await row())?.state === 'ready', 10_000, 'the blob to be published');
    assert.equal(proxy.blobRanges.length, 3, 'from 0, the resume (another ETag), from 0 again');
    assert.deepEqual([proxy.blobRanges[0], proxy.blobRanges[2]], [undefined, undefined]);
    assert.match(proxy.blobRanges[1] ?? '', /^bytes=\d+-$/);
  } finally {
    proxy.changeEtag = false;
  }
});

test('an upstream body that stalls is given up on after the stall time and resumed from where it stopped', async () => {
  await t.close();
  t = await createTestApp(proxy.url, 60, { stallMs: 300 });
  assert.equal((await t.app.request('/v2/transfer/manifests/1')).status, 200);
  proxy.fault = 'stall';
  proxy.blobRanges = [];
  const body = await readAll(await get());
  assert.ok(Buffer.isBuffer(body) && body.equals(layerBytes));
  assert.equal(proxy.blobRanges.length, 2);
  const from = Number(/^bytes=(\d+)-$/.exec(proxy.blobRanges[1] ?? '')?.[1]);
  assert.ok(from > 0 && from <= layer().size / 2, `resumed from ${from}`);
  // The client has its last byte once verified; the publication follows.
  await until(async () => (await row())?.state === 'ready', 10_000, 'the blob to be published');
});

test('a cut that keeps coming fails the transfer retryably after its resumes, and keeps what is staged for the next attempt', async () => {
  await t.close();
  t = await createTestApp(proxy.url, 60, { resumes: 1 });
  assert.equal((await t.app.request('/v2/transfer/manifests/1')).status, 200);
  proxy.cuts = [0.2, 0.4];
  const body = await readAll(await get());
  assert.ok(body instanceof Error || body.length < layer().size, 'cut short, never the full length');
  await until(async () => (await row())?.state === 'failed', 10_000, 'the failure to be recorded');
  assert.equal((await row())?.errorRetryable, true);
  const staged = await t.store.staging(`blobs/sha256/${layer().digest.slice(7)}`).length();
  // What arrived before the last cut stays staged (bytes in flight may be lost with the connection).
  assert.ok(staged > 0.2 * layer().size && staged <= Math.floor(0.4 * layer().size), `${staged} bytes staged`);
  assert.equal(await t.store.stat(`blobs/sha256/${layer().digest.slice(7)}`), undefined);
  // The next attempt (the job's retry) re-hashes what is staged and fetches only the rest.
  proxy.blobRanges = [];
  assert.deepEqual(await ingestBlob(t.ingestDeps, layer().digest, 'job-2'), { ok: true, outcome: 'stored', bytes: layer().size });
  assert.deepEqual(proxy.blobRanges, [`bytes=${staged}-`]);
  assert.equal(await t.store.staging(`blobs/sha256/${layer().digest.slice(7)}`).length(), 0, 'the staging is gone once published');
});

test('staged bytes that do not verify after a restart are removed and fetched again from 0, retryably, before the upstream is blamed', async () => {
  const key = `blobs/sha256/${layer().digest.slice(7)}`;
  // What a crashed owner could leave: a staged start of the blob that is not its start (a torn write).
  const torn = t.store.staging(key);
  await torn.open();
  await torn.append(randomBytes(1024 * 1024));
  await torn.close();
  proxy.blobRanges = [];
  const first = await ingestBlob(t.ingestDeps, layer().digest, 'job-1');
  assert.equal(first.ok, false);
  assert.match(String((first as { error?: string }).error), /resumed after a restart came out as sha256:[0-9a-f]{64}; the next attempt fetches it from 0/);
  assert.deepEqual(proxy.blobRanges, ['bytes=1048576-'], 'the staged bytes were resumed from');
  assert.equal((await row())?.errorRetryable, true, 'retryable: the upstream is not blamed yet');
  assert.equal(await t.store.staging(key).length(), 0, 'the staged bytes are removed');
  assert.equal(await t.store.stat(key), undefined, 'nothing published');
  proxy.blobRanges = [];
  assert.deepEqual(await ingestBlob(t.ingestDeps, layer().digest, 'job-2'), { ok: true, outcome: 'stored', bytes: layer().size });
  assert.deepEqual(proxy.blobRanges, [undefined], 'the retry fetches the whole blob');
});

test('a client that goes away does not stop the transfer: the blob is stored and the next client reads it from the store', async () => {
  proxy.fault = 'slow';
  const res = await get();
  const reader = res.body!.getReader();
  await reader.read();
  await reader.cancel();
  await until(async () => (await row())?.state === 'ready', 10_000, 'the transfer to finish without its client');
  proxy.fault = 'none';
  const again = await get();
  assert.ok((await readAll(again) as Buffer).equals(layerBytes));
});

test('a Range request on a blob in flight is served from the transfer once its bytes are there; a range far ahead is passed through, with no second full download', async () => {
  proxy.fault = 'slow';
  const before = await upstreamLayerGets();
  const whole = get();
  const staging = t.store.staging(`blobs/sha256/${layer().digest.slice(7)}`);
  await until(async () => (await staging.length()) >= 64 * 1024, 10_000, 'the first bytes to arrive');
  const near = await t.app.request(`/v2/transfer/blobs/${layer().digest}`, { headers: { range: 'bytes=100-199' } });
  assert.equal(near.status, 206);
  assert.equal(near.headers.get('content-range'), `bytes 100-199/${layer().size}`);
  assert.ok(Buffer.from(await near.arrayBuffer()).equals(layerBytes.subarray(100, 200)));
  const size = layer().size;
  const far = await t.app.request(`/v2/transfer/blobs/${layer().digest}`, { headers: { range: `bytes=${size - 100}-${size - 1}` } });
  assert.equal(far.status, 206);
  assert.ok(Buffer.from(await far.arrayBuffer()).equals(layerBytes.subarray(size - 100)));
  assert.ok(((await readAll(await whole)) as Buffer).equals(layerBytes));
  await until(async () => (await row())?.state === 'ready', 10_000, 'the blob to be published');
  assert.equal((await upstreamLayerGets()) - before, 2, 'the transfer and the far range: the near one came from the transfer');
});

test("a client asking while the ingest job fetches the blob joins the job's transfer: one upstream GET", async () => {
  proxy.fault = 'slow';
  const before = await upstreamLayerGets();
  const job = ingestBlob(t.ingestDeps, layer().digest, 'job-1');
  await until(async () => (await row())?.leaseOwner === 'job-1', 10_000, 'the job to claim the blob');
  const res = await get();
  assert.equal(res.status, 200);
  assert.ok(((await readAll(res)) as Buffer).equals(layerBytes));
  assert.deepEqual(await job, { ok: true, outcome: 'stored', bytes: layer().size });
  assert.equal((await upstreamLayerGets()) - before, 1);
});

test('on S3 without a spool (as a Worker runs): clients of a blob smaller than a chunk, and of one of several chunks, get every byte from the transfer', { skip: !process.env.S3_TEST_ENDPOINT, timeout: 60_000 }, async () => {
  const s3 = (await s3TestBucket('transfer'))!;
  for (const partSizeBytes of [8 * 1024 * 1024, 5 * 1024 * 1024]) {
    await t.close();
    const store = new S3BlobStore(s3.client, { bucket: s3.bucket, partSizeBytes, queueSize: 2 });
    t = await createTestApp(proxy.url, 60, undefined, { store, spool: false });
    assert.equal((await t.app.request('/v2/transfer/manifests/1')).status, 200);
    proxy.fault = 'slow';
    const bodies = await Promise.all((await Promise.all(Array.from({ length: 3 }, () => get()))).map(readAll));
    for (const body of bodies) assert.ok(Buffer.isBuffer(body) && body.equals(layerBytes), `every byte (${partSizeBytes / 1024 / 1024} MiB chunks)`);
    await until(async () => (await row())?.state === 'ready', 10_000, 'the blob to be published');
    assert.equal(await store.stat(`blobs/sha256/${layer().digest.slice(7)}`).then((s) => s?.size), layer().size);
    await store.delete(`blobs/sha256/${layer().digest.slice(7)}`);
  }
});

test('on S3 with a spool: a reader elsewhere announcing itself mid-transfer (every part then a chunk too) does not lose the spool to a local client done long before the bucket: the blob is published', { skip: !process.env.S3_TEST_ENDPOINT, timeout: 120_000 }, async () => {
  const s3 = (await s3TestBucket('transfer-follow'))!;
  const big = await pushImage(registry, 'library/follow', '1', [{ 'big.bin': randomBytes(48 * 1024 * 1024) }]);
  const blob = big.layers[0]!;
  const key = `blobs/sha256/${blob.digest.slice(7)}`;
  await t.close();
  const store = new S3BlobStore(s3.client, { bucket: s3.bucket, partSizeBytes: 5 * 1024 * 1024, queueSize: 2 });
  t = await createTestApp(proxy.url, 60, undefined, { store });
  assert.equal((await t.app.request('/v2/follow/manifests/1')).status, 200);
  proxy.fault = 'slow';
  const client = Promise.resolve(t.app.request(`/v2/follow/blobs/${blob.digest}`)).then(readAll);
  const spooled = async () => {
    let total = 0;
    for (const e of await readdir(join(t.dir, 'spool'), { recursive: true, withFileTypes: true }).catch(() => [])) if (e.isFile()) total += (await stat(join(e.parentPath, e.name)).catch(() => ({ size: 0 }))).size;
    return total;
  };
  // The first part has gone straight into the multipart upload when a reader elsewhere
  // announces itself: from then on every part is written as a chunk object and copied into
  // the upload (twice the bucket's work), while the rest of the blob arrives at once. The
  // local client is fed from the spool, so it is done long before the bucket is.
  await until(async () => (await spooled()) >= 6 * 1024 * 1024, 60_000, 'the first part to be spooled');
  const follower = store.staging(key);
  await follower.follow();
  proxy.fault = 'none';
  const body = await client;
  assert.ok(Buffer.isBuffer(body) && body.length === blob.size, 'the local client gets every byte');
  const state = async () => (await t.db.select().from(blobs).where(eq(blobs.digest, blob.digest)))[0];
  await until(async () => ['ready', 'failed'].includes((await state())?.state ?? ''), 60_000, 'the transfer to end');
  const final = (await state())!;
  assert.equal(final.state, 'ready', `the blob is published, not failed on a spool removed under the staging: ${final.error}`);
  assert.equal((await store.stat(key))?.size, blob.size);
  await follower.close();
  await store.delete(key);
});
