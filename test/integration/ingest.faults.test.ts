// The ingest job on real components: Debian's docker-registry upstream (through a proxy
// that can corrupt or cut blob bodies), a libSQL file, and the filesystem and S3 stores.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { openDatabase, type Database } from '../../core/adapters/libsql.ts';
import { ingestBlob, type IngestDeps } from '../../core/cache/ingest.ts';
import { LibsqlCatalog } from '../../core/adapters/libsql-catalog.ts';
import { blobKey } from '../../core/oci/keys.ts';
import { parseDigest } from '../../core/oci/reference.ts';
import { LibsqlJobQueue } from '../../core/adapters/libsql-queue.ts';
import { parseConfig } from '../../core/config.ts';
import { buildDeps } from '../../workers/deps.ts';
import { FilesystemBlobStore } from '../../core/adapters/fs-store.ts';
import { S3BlobStore } from '../../core/adapters/s3-store.ts';
import { s3TestBucket } from '../setup/s3.ts';
import { blobs } from '../../schema/blobs.ts';
import type { BlobStore } from '../../core/ports/blob-store.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startFaultyProxy, type Fault } from '../setup/faulty-proxy.ts';
import { until } from '../setup/process.ts';

let registry: Registry;
let proxy: Awaited<ReturnType<typeof startFaultyProxy>>;
let image: BuiltImage;
let dir: string;
let db: Database;
let close: () => void;
const stores: Array<[string, BlobStore]> = [];

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/ingest', '1', [{ 'a.txt': 'a\n' }, { 'big.bin': Buffer.alloc(300_000, 3) }]);
  proxy = await startFaultyProxy(registry.url);
  dir = await mkdtemp(join(tmpdir(), 'pt-ingest-'));
  stores.push(['filesystem', new FilesystemBlobStore(join(dir, 'store'))]);
  const s3 = await s3TestBucket('ingest');
  if (s3) stores.push(['s3', new S3BlobStore(s3.client, { bucket: s3.bucket, partSizeBytes: 5 * 1024 * 1024, queueSize: 2 })]);
});
after(async () => {
  await proxy?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  close?.();
  ({ db, close } = await openDatabase(`file:${join(dir, `db-${Date.now()}-${Math.random()}.db`)}`));
  proxy.fault = 'none';
});

/** The ingest job's dependencies as both runtimes wire them (workers/deps.ts), on this test's database and `store`. */
const deps = (store: BlobStore): IngestDeps =>
  buildDeps(parseConfig({ UPSTREAMS: JSON.stringify({ 'docker.io': { url: proxy.url } }), JOB_LEASE_SECONDS: '10' }), {
    catalog: new LibsqlCatalog(db),
    store,
    queue: new LibsqlJobQueue(db),
    log: () => {},
    upstream: { attempts: 1 },
  }).ingest;
const layer = () => image.layers[1]!;
/** A pending blob row, as a manifest pull records it. */
const recordBlob = (source: { digest: string; upstream: string; name: string; size?: number }) =>
  new LibsqlCatalog(db).recordBlob({ ...source, storageKey: blobKey(parseDigest(source.digest)) }, Date.now());
const row = async () => (await db.select().from(blobs).where(eq(blobs.digest, layer().digest)))[0];

test('a blob is ingested once, verified, and a repeated job is a no-op', async () => {
  for (const [name, store] of stores) {
    await recordBlob({ digest: layer().digest, upstream: 'docker.io', name: 'library/ingest', size: layer().size });
    const before = registry.requests().length;
    assert.deepEqual(await ingestBlob(deps(store), layer().digest, 'w1'), { ok: true, outcome: 'stored', bytes: layer().size }, name);
    assert.deepEqual(await store.stat(`blobs/sha256/${layer().digest.slice(7)}`), { size: layer().size }, name);
    assert.equal((await row())?.state, 'ready', name);
    assert.deepEqual(await ingestBlob(deps(store), layer().digest, 'w2'), { ok: true, outcome: 'already-ready' }, name);
    const blobGets = registry.requests().slice(before).filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
    assert.equal(blobGets.length, 1, `${name}: one upstream blob download`);
    await store.delete(`blobs/sha256/${layer().digest.slice(7)}`);
    await db.delete(blobs);
  }
});

for (const fault of ['corrupt', 'cut'] as Fault[]) {
  test(`an upstream that ${fault === 'corrupt' ? 'lies about the digest' : 'cuts the stream'}: nothing stored, failed recorded`, async () => {
    for (const [name, store] of stores) {
      proxy.fault = fault;
      await recordBlob({ digest: layer().digest, upstream: 'docker.io', name: 'library/ingest', size: layer().size });
      const result = await ingestBlob(deps(store), layer().digest, 'w1');
      assert.equal(result.ok, false, name);
      assert.equal(!result.ok && result.retry, true, name);
      assert.equal(await store.stat(`blobs/sha256/${layer().digest.slice(7)}`), undefined, name);
      const r = await row();
      assert.equal(r?.state, 'failed', name);
      assert.equal(r?.attempts, 1, name);
      if (fault === 'corrupt') assert.match(r?.error ?? '', /^UPSTREAM_INVALID: content does not match its digest/, name);
      // The upstream recovers: the retried job completes.
      proxy.fault = 'none';
      assert.deepEqual(await ingestBlob(deps(store), layer().digest, 'w2'), { ok: true, outcome: 'stored', bytes: layer().size }, name);
      assert.equal((await row())?.attempts, 2, name);
      await store.delete(`blobs/sha256/${layer().digest.slice(7)}`);
      await db.delete(blobs);
    }
  });
}

test('a consumer that loses its lease mid-stream stops writing and leaves the row to the new owner', { timeout: 30_000 }, async () => {
  for (const [name, store] of stores) {
    proxy.fault = 'stall';
    await recordBlob({ digest: layer().digest, upstream: 'docker.io', name: 'library/ingest', size: layer().size });
    const running = ingestBlob({ ...deps(store), leaseMs: 1_500 }, layer().digest, 'w1');
    await until(async () => (await row())?.state === 'fetching', 10_000, 'the download to start');
    // What a second consumer's claim does once the first one's lease has run out.
    await db.update(blobs).set({ leaseOwner: 'w2', leaseExpiresAt: Date.now() + 60_000 }).where(eq(blobs.digest, layer().digest));
    const result = await running;
    assert.equal(result.ok, false, name);
    assert.match(!result.ok ? result.error : '', /lost the blob lease/, name);
    assert.equal(await store.stat(`blobs/sha256/${layer().digest.slice(7)}`), undefined, name);
    const r = await row();
    assert.equal(r?.leaseOwner, 'w2', `${name}: the loser does not touch the row`);
    assert.equal(r?.state, 'fetching', name);
    await db.delete(blobs);
  }
});

test("losing the job's own lease stops the transfer too: nothing stored, the blob row freed for the next owner", async () => {
  const [, store] = stores[0]!;
  proxy.fault = 'stall';
  await recordBlob({ digest: layer().digest, upstream: 'docker.io', name: 'library/ingest', size: layer().size });
  const job = new AbortController();
  const running = ingestBlob(deps(store), layer().digest, 'w1', job.signal);
  await until(async () => (await row())?.state === 'fetching', 10_000, 'the download to start');
  job.abort(new Error('lost the job lease: another owner has it'));
  const result = await running;
  assert.deepEqual(result, { ok: false, retry: true, error: 'lost the job lease: another owner has it' });
  assert.equal(await store.stat(`blobs/sha256/${layer().digest.slice(7)}`), undefined);
  const r = await row();
  assert.deepEqual([r?.state, r?.leaseOwner], ['failed', null]);
  await db.delete(blobs);
});

test('a blob the upstream does not have fails for good', async () => {
  const [, store] = stores[0]!;
  const missing = `sha256:${'c'.repeat(64)}`;
  await recordBlob({ digest: missing, upstream: 'docker.io', name: 'library/ingest' });
  const result = await ingestBlob(deps(store), missing, 'w1');
  assert.deepEqual(result, {
    ok: false,
    retry: false,
    error: `BLOB_UNKNOWN: the upstream does not have the blob {"digest":"${missing}","name":"library/ingest"}`,
  });
});

test('a duplicate job for a blob leased by a live consumer is done without fetching', async () => {
  const [, store] = stores[0]!;
  await recordBlob({ digest: layer().digest, upstream: 'docker.io', name: 'library/ingest', size: layer().size });
  await db.update(blobs).set({ state: 'fetching', leaseOwner: 'other', leaseExpiresAt: Date.now() + 60_000 });
  const before = registry.requests().length;
  assert.deepEqual(await ingestBlob(deps(store), layer().digest, 'w1'), { ok: true, outcome: 'leased-elsewhere' });
  assert.equal(registry.requests().length, before, 'no upstream request');
  assert.equal((await row())?.leaseOwner, 'other');
});
