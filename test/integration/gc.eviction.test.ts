// Retention (core/cache/gc.ts) on real pulls: past CACHE_MAX_BYTES the least recently
// pulled image goes, with its extracted layer; a pinned one and one in flight stay; a
// pull of the evicted image works and stores it again; CACHE_MAX_AGE_SECONDS evicts by age;
// CACHE_EVICT_LAYERS=first takes extracted layers before any blob.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createTestApp, type TestApp } from '../setup/app.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { startFaultyProxy, type FaultyProxy } from '../setup/faulty-proxy.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { until } from '../setup/process.ts';
import { runGc } from '../../core/cache/gc.ts';
import { extractLayer } from '../../core/cache/extract.ts';
import { digestOf } from '../../core/oci/digest.ts';
import { MANIFEST_MEDIA_TYPES } from '../../core/oci/manifest.ts';

let registry: Registry;
let proxy: FaultyProxy;
const images: Record<string, BuiltImage> = {};

before(async () => {
  registry = await startRegistry();
  for (const name of ['pinned', 'old', 'middle', 'recent']) images[name] = await pushImage(registry, `library/${name}`, '1', [{ [`etc/${name}`]: randomBytes(200_000) }]);
  images.inflight = await pushImage(registry, 'library/inflight', '1', [{ 'etc/big': randomBytes(8 * 1024 * 1024) }]);
  proxy = await startFaultyProxy(registry.url);
});
after(async () => {
  await proxy?.stop();
  await registry?.stop();
});

const MINUTE = 60_000;
const accept = { accept: MANIFEST_MEDIA_TYPES.join(', ') };
const blobsOf = (image: BuiltImage) => [image.configDigest, ...image.layers.map((l) => l.digest)];
const sizeOf = (image: BuiltImage) => image.layers.reduce((n, l) => n + l.size, 0);

async function pull(t: TestApp, name: string): Promise<void> {
  const image = images[name]!;
  assert.equal((await t.app.request(`/v2/library/${name}/manifests/1`, { headers: accept })).status, 200);
  for (const digest of blobsOf(image)) {
    const res = await t.app.request(`/v2/library/${name}/blobs/${digest}`);
    assert.equal(res.status, 200, `${name} ${digest}`);
    assert.equal(digestOf(new Uint8Array(await res.arrayBuffer())), digest);
  }
  await until(async () => (await Promise.all(blobsOf(image).map((d) => t.deps.app.blobs.catalog.blob(d)))).every((b) => b?.state === 'ready'), 30_000, `${name} stored`);
  await t.deps.pulls.flush();
}
const state = async (t: TestApp, digest: string) => (await t.deps.app.blobs.catalog.blob(digest))?.state;

test('past CACHE_MAX_BYTES the least recently pulled image goes with its extracted layer; the pinned and the in-flight stay; pulling it again refills it', async () => {
  // Config blobs are a few hundred bytes: the cap sits just under everything stored, so one image has to go.
  const total = ['pinned', 'old', 'middle', 'recent'].reduce((n, name) => n + sizeOf(images[name]!), 0);
  const t = await createTestApp(proxy.url, 60, undefined, {
    // No wait between marking and deleting (memory-cache.processes tests it): the run ends while the slowed blob is still in flight.
    env: { CACHE_MAX_BYTES: String(total), CACHE_LOW_WATER_PERCENT: '100', CACHE_PINNED: 'docker.io/library/pinned', MEMORY_CACHE_TTL_SECONDS: '0' },
  });
  try {
    // Pulled in this order, ten minutes apart; the old image's layer is extracted at once
    // (its plan counts as a pull), and `middle` is pulled again last.
    await pull(t, 'pinned');
    t.advance(10 * MINUTE);
    await pull(t, 'old');
    const oldLayer = images.old!.layers[0]!;
    const plan = await t.app.request('/api/rootfs/library/old:1');
    assert.equal(plan.status, 202);
    const diffId = ((await plan.json()) as { layers: Array<{ diff_id: string }> }).layers[0]!.diff_id;
    assert.equal((await extractLayer(t.deps.ingest, diffId, 'test')).ok, true);
    await t.deps.pulls.flush();
    for (const name of ['middle', 'recent', 'middle']) {
      t.advance(10 * MINUTE);
      await pull(t, name);
    }
    t.advance(10 * MINUTE);

    // A blob in flight: its transfer runs at the slowed upstream's pace while GC runs.
    proxy.fault = 'slow';
    assert.equal((await t.app.request('/v2/library/inflight/manifests/1', { headers: accept })).status, 200);
    const big = images.inflight!.layers[0]!.digest;
    const inflight = await t.app.request(`/v2/library/inflight/blobs/${big}`);
    assert.equal(await state(t, big), 'fetching');

    const dry = await runGc(t.deps.gc, { dryRun: true, owner: 'dry' });
    const oldBlobs = [images.old!.configDigest, oldLayer.digest];
    // Old's two blobs are equally old (digest order decides); its layer must go to get under the cap.
    const named = dry.items.filter((i) => i.kind === 'blob').map((i) => i.key);
    assert.ok(named.includes(oldLayer.digest) && named.every((d) => oldBlobs.includes(d)), `the dry run names the old image only, the pinned one skipped: ${named}`);
    assert.ok(dry.items.some((i) => i.kind === 'layer' && i.key === diffId), 'the dry run names the extracted layer');
    assert.equal(await state(t, oldLayer.digest), 'ready', 'a dry run evicts nothing');

    const run = await runGc(t.deps.gc, { owner: 'run' });
    assert.deepEqual(run.items.filter((i) => i.kind === 'blob').map((i) => i.key), named, 'the run evicts what the dry run named');
    assert.ok(run.items.some((i) => i.kind === 'layer' && i.key === diffId));
    for (const name of ['pinned', 'middle', 'recent']) for (const d of blobsOf(images[name]!)) assert.equal(await state(t, d), 'ready', `${name} stays`);
    assert.equal(await state(t, oldLayer.digest), 'evicted');
    assert.equal(await t.store.stat(`blobs/sha256/${oldLayer.digest.slice(7)}`), undefined, 'its object is gone');
    const layer = await t.deps.app.blobs.catalog.layer(diffId);
    assert.equal(layer?.state, 'pending', 'its extracted layer is gone too');
    assert.equal(await t.store.stat(layer!.tarKey), undefined);
    assert.ok(run.storedBytes.after <= total, `${run.storedBytes.after} ≤ ${total}`);
    assert.equal(await state(t, big), 'fetching', 'the blob in flight is not touched');
    assert.equal(digestOf(new Uint8Array(await inflight.arrayBuffer())), big);
    proxy.fault = 'none';

    // The evicted image pulls as before, from the upstream, and is stored again.
    const fetchedBefore = registry.requests().filter((r) => r.path.endsWith(oldLayer.digest) && r.method === 'GET').length;
    await pull(t, 'old');
    assert.equal(await state(t, oldLayer.digest), 'ready');
    assert.ok(registry.requests().filter((r) => r.path.endsWith(oldLayer.digest) && r.method === 'GET').length > fetchedBefore, 'fetched again from the upstream');
  } finally {
    proxy.fault = 'none';
    await t.close();
  }
});

test('CACHE_EVICT_LAYERS=first: past the cap the least recently used extracted layer goes and every blob stays; a plan extracts it again', async () => {
  const t = await createTestApp(proxy.url, 60, undefined, { env: { CACHE_EVICT_LAYERS: 'first', CACHE_LOW_WATER_PERCENT: '100', CACHE_MAX_BYTES: '1' } });
  try {
    const diffIds: Record<string, string> = {};
    for (const name of ['old', 'middle']) {
      await pull(t, name);
      const plan = await t.app.request(`/api/rootfs/library/${name}:1`);
      assert.equal(plan.status, 202);
      diffIds[name] = ((await plan.json()) as { layers: Array<{ diff_id: string }> }).layers[0]!.diff_id;
      assert.equal((await extractLayer(t.deps.ingest, diffIds[name]!, 'test')).ok, true);
      await t.deps.pulls.flush();
      t.advance(10 * MINUTE);
    }
    // The cap one byte under what is stored: one layer has to go, the least recently used.
    const usage = await t.deps.gc.catalog.usage();
    t.deps.gc.retention.maxBytes = usage.blobBytes + usage.layerBytes - 1;
    const run = await runGc(t.deps.gc, { owner: 'layers-first' });
    assert.deepEqual(run.items.map((i) => [i.kind, i.key]), [['layer', diffIds.old]], 'only the old layer goes');
    const old = await t.deps.gc.catalog.layer(diffIds.old!);
    assert.equal(old?.state, 'pending');
    assert.equal(await t.store.stat(old!.tarKey), undefined, 'its layer.tar is gone');
    assert.equal((await t.deps.gc.catalog.layer(diffIds.middle!))?.state, 'ready');
    for (const name of ['old', 'middle']) for (const d of blobsOf(images[name]!)) assert.equal(await state(t, d), 'ready', `${name}'s blobs stay`);
    // A sandbox asking again gets it extracted again, from the blob still stored.
    assert.equal((await t.app.request('/api/rootfs/library/old:1')).status, 202);
    assert.equal((await extractLayer(t.deps.ingest, diffIds.old!, 'test')).ok, true);
    assert.equal((await t.deps.gc.catalog.layer(diffIds.old!))?.state, 'ready');
  } finally {
    await t.close();
  }
});

test('CACHE_MAX_AGE_SECONDS: what was not pulled for that long goes; what was pulled within the guard stays', async () => {
  const t = await createTestApp(proxy.url, 60, undefined, { env: { CACHE_MAX_AGE_SECONDS: '3600' } });
  try {
    await pull(t, 'old');
    t.advance(2 * 3600 * 1000);
    await pull(t, 'recent');
    const run = await runGc(t.deps.gc, { owner: 'age' });
    assert.deepEqual(run.items.filter((i) => i.kind === 'blob').map((i) => i.key).sort(), blobsOf(images.old!).sort());
    assert.ok(run.items.every((i) => !('reason' in i) || i.reason === 'age'));
    for (const d of blobsOf(images.old!)) assert.equal(await state(t, d), 'evicted');
    for (const d of blobsOf(images.recent!)) assert.equal(await state(t, d), 'ready');
  } finally {
    await t.close();
  }
});

test('a run killed between its steps (the row evicted under its lease, the object not yet deleted) leaves nothing a client sees half-deleted', async () => {
  const t = await createTestApp(proxy.url);
  try {
    await pull(t, 'recent');
    t.advance(10 * MINUTE);
    const layer = images.recent!.layers[0]!.digest;
    const key = `blobs/sha256/${layer.slice(7)}`;
    // What a GC process killed after step 1 leaves: the row evicted under a lease nobody renews, the object still there.
    assert.ok(await t.deps.app.blobs.catalog.beginEviction('blob', layer, 'killed-gc', 10_000, Date.now() + 3600_000, Date.now() + 10 * MINUTE));
    assert.ok(await t.store.stat(key), 'the object is still there');
    const during = await t.app.request(`/v2/library/recent/blobs/${layer}`);
    assert.equal(during.status, 200, 'served from the upstream meanwhile, not from an object being removed');
    assert.equal(digestOf(new Uint8Array(await during.arrayBuffer())), layer);
    assert.equal(await state(t, layer), 'evicted', 'no transfer takes a row under the eviction lease');
    t.advance(MINUTE); // the lease runs out
    await pull(t, 'recent');
    assert.equal(await state(t, layer), 'ready', 'the next pull fetches it again');
    assert.equal((await t.store.stat(key))?.size, images.recent!.layers[0]!.size);
  } finally {
    await t.close();
  }
});
