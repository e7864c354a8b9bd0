// One Catalog suite, run on every adapter on real libSQL: a database file, and the same
// over HTTP (Hrana, as Turso serves it). It ends with several processes writing to one
// database at once, as Node servers sharing a DATA_DIR or a Turso database do.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../../core/adapters/libsql-catalog.ts';
import type { Catalog } from '../../core/ports/catalog.ts';
import { CachedCatalog } from '../../core/registry/memory-cache.ts';
import { blobKey, layerTarKey, layerTocKey } from '../../core/oci/keys.ts';
import { parseDigest } from '../../core/oci/reference.ts';
import { startHranaServer, type HranaServer } from '../setup/hrana-server.ts';

const run = promisify(execFile);
const dir = await mkdtemp(join(tmpdir(), 'pt-catalog-'));
const servers: HranaServer[] = [];
after(async () => {
  for (const s of servers) await s.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Adapter {
  name: string;
  /** A fresh, migrated database: its URL and token. */
  database(label: string): Promise<{ url: string; authToken?: string }>;
  /** The catalog over it (default: the libSQL catalog itself). */
  catalog?: (inner: Catalog) => Catalog;
}

const adapters: Adapter[] = [
  { name: 'libSQL file', database: async (label) => ({ url: `file:${join(dir, `${label}.db`)}` }) },
  {
    name: 'libSQL over HTTP',
    async database(label) {
      const server = await startHranaServer(join(dir, `${label}-http.db`));
      servers.push(server);
      return { url: server.url, authToken: server.authToken };
    },
  },
  {
    // What every part of a process uses (workers/deps.ts): the same answers, from memory
    // where it keeps them, for a process's own writes. Its clock stands still at 0, so the
    // suite's times (from 1000 on) are all in the future of every entry's expiry check.
    name: 'in-process cache over a libSQL file',
    database: async (label) => ({ url: `file:${join(dir, `${label}-cached.db`)}` }),
    catalog: (inner) => new CachedCatalog(inner, { maxEntries: 1000, maxBytes: 1 << 20, ttlMs: 3600_000, tagTtlMs: 3600_000 }, () => 0),
  },
];
const catalogOf = (adapter: Adapter, inner: Catalog): Catalog => adapter.catalog?.(inner) ?? inner;

const hex = (n: number) => n.toString(16).padStart(64, '0');
const digest = (n: number) => `sha256:${hex(n)}`;
const target = { upstream: 'docker.io', name: 'library/conformance' };
const blobSource = (n: number, size?: number) => ({ digest: digest(n), upstream: target.upstream, name: target.name, size, storageKey: blobKey(parseDigest(digest(n))) });
const layerSource = (n: number, blob: number) => {
  const diffId = parseDigest(digest(n));
  return { diffId: diffId.value, blobDigest: digest(blob), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', compression: 'gzip' as const, tarKey: layerTarKey(diffId), tocKey: layerTocKey(diffId) };
};

for (const adapter of adapters) {
  describe(`Catalog conformance: ${adapter.name}`, () => {
    let catalog: Catalog;
    let url: string;
    let authToken: string | undefined;
    let close: () => void;
    before(async () => {
      ({ url, authToken } = await adapter.database('suite'));
      let db;
      ({ db, close } = await openDatabase(url, authToken));
      catalog = catalogOf(adapter, new LibsqlCatalog(db));
    });
    after(() => close());

    test('a tag resolution is remembered per repository and replaced by the next one', async () => {
      assert.equal(await catalog.tag(target, 'v1'), undefined);
      await catalog.putTag(target, 'v1', digest(1), 1000);
      await catalog.putTag({ ...target, name: 'library/other' }, 'v1', digest(2), 1000);
      assert.deepEqual(await catalog.tag(target, 'v1'), { digest: digest(1), resolvedAt: 1000 });
      await catalog.putTag(target, 'v1', digest(3), 2000);
      assert.deepEqual(await catalog.tag(target, 'v1'), { digest: digest(3), resolvedAt: 2000 });
      assert.deepEqual(await catalog.tag({ ...target, name: 'library/other' }, 'v1'), { digest: digest(2), resolvedAt: 1000 });
      assert.equal(await catalog.tag({ upstream: 'ghcr.io', name: target.name }, 'v1'), undefined, 'per upstream too');
    });

    test('a tag list is remembered whole and replaced', async () => {
      assert.equal(await catalog.tagList(target), undefined);
      await catalog.putTagList(target, ['b', 'a'], 1000);
      assert.deepEqual(await catalog.tagList(target), ['b', 'a']);
      await catalog.putTagList(target, [], 2000);
      assert.deepEqual(await catalog.tagList(target), []);
    });

    test('a manifest is recorded with its references, once, and pending blob rows for them', async () => {
      const manifest = { digest: digest(100), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 42, storageKey: `manifests/sha256/${hex(100)}` };
      const refs = [
        { digest: digest(101), kind: 'config' as const, position: 0, blob: blobSource(101, 10) },
        { digest: digest(102), kind: 'layer' as const, position: 1, blob: blobSource(102, 20) },
      ];
      await catalog.recordManifest(manifest, refs, 1000);
      await catalog.recordManifest(manifest, refs, 2000);
      const row = await catalog.manifest(digest(100));
      assert.equal(row?.size, 42);
      assert.equal(row?.createdAt, 1000, 'the second record changed nothing');
      assert.deepEqual((await catalog.blobsNotReady(digest(100))).sort(), [digest(101), digest(102)]);
      const blob = await catalog.blob(digest(102));
      assert.equal(blob?.state, 'pending');
      assert.equal(blob?.size, 20);
      assert.equal(blob?.storageKey, `blobs/sha256/${hex(102)}`);
      assert.equal(blob?.name, target.name);
    });

    test("a manifest's blobs not ready follow its blobs: none once all are stored, one again when its object goes missing", async () => {
      const layer = { digest: digest(151), kind: 'layer' as const, position: 0, blob: blobSource(151, 7) };
      await catalog.recordManifest({ digest: digest(150), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 10, storageKey: `manifests/sha256/${hex(150)}` }, [layer], 1000);
      assert.deepEqual(await catalog.blobsNotReady(digest(150)), [digest(151)]);
      const claim = await catalog.claim('blob', digest(151), 'w', 10_000, 1000);
      assert.ok(claim.claimed);
      await catalog.blobStored(digest(151), 'w', 7, 1001);
      assert.deepEqual(await catalog.blobsNotReady(digest(150)), []);
      assert.deepEqual(await catalog.blobsNotReady(digest(150)), [], 'asked again');
      await catalog.blobMissing(digest(151), 1002);
      assert.deepEqual(await catalog.blobsNotReady(digest(150)), [digest(151)], 'its object went missing');
    });

    test('one owner at a time: a claim wins once, a lost lease cannot renew, fail or finish', async () => {
      await catalog.recordBlob(blobSource(200, 5), 1000);
      await catalog.recordBlob(blobSource(200, 999), 1000);
      assert.equal((await catalog.blob(digest(200)))?.size, 5, 'recording again changes nothing');
      const first = await catalog.claim('blob', digest(200), 'a', 10_000, 1000);
      assert.equal(first.claimed?.state, 'fetching');
      assert.equal(first.claimed?.attempts, 1);
      const second = await catalog.claim('blob', digest(200), 'b', 10_000, 2000);
      assert.equal(second.claimed, undefined);
      assert.equal(second.current?.leaseOwner, 'a');
      assert.equal(await catalog.renew('blob', digest(200), 'a', 10_000, 5000), true);
      // a's lease now runs to 15 000: b takes over only after that.
      assert.equal((await catalog.claim('blob', digest(200), 'b', 10_000, 14_000)).claimed, undefined);
      const taken = await catalog.claim('blob', digest(200), 'b', 10_000, 15_000);
      assert.equal(taken.claimed?.attempts, 2);
      assert.equal(await catalog.renew('blob', digest(200), 'a', 10_000, 15_001), false);
      await catalog.fail('blob', digest(200), 'a', { message: 'stale', retryable: true }, 15_002);
      await catalog.blobStored(digest(200), 'a', 5, 15_003);
      assert.equal((await catalog.blob(digest(200)))?.state, 'fetching', 'the old owner wrote nothing');
      await catalog.fail('blob', digest(200), 'b', { message: 'UNAVAILABLE: upstream down', retryable: true }, 16_000);
      const failed = await catalog.blob(digest(200));
      assert.deepEqual([failed?.state, failed?.error, failed?.errorRetryable, failed?.leaseOwner], ['failed', 'UNAVAILABLE: upstream down', true, null]);
      assert.ok((await catalog.claim('blob', digest(200), 'c', 10_000, 16_001)).claimed, 'a failed row can be claimed again');
      await catalog.blobStored(digest(200), 'c', 5, 17_000);
      const ready = await catalog.blob(digest(200));
      assert.deepEqual([ready?.state, ready?.readyAt, ready?.error, ready?.leaseOwner], ['ready', 17_000, null, null]);
      const again = await catalog.claim('blob', digest(200), 'd', 10_000, 18_000);
      assert.equal(again.claimed, undefined);
      assert.equal(again.current?.state, 'ready');
      assert.deepEqual(await catalog.claim('blob', digest(999), 'd', 10_000, 18_000), { current: undefined });
    });

    test('a ready blob whose object is gone goes back to pending', async () => {
      await catalog.recordBlob(blobSource(300, 1), 1000);
      await catalog.claim('blob', digest(300), 'a', 10_000, 1000);
      await catalog.blobStored(digest(300), 'a', 1, 1000);
      await catalog.blobMissing(digest(300), 2000);
      assert.equal((await catalog.blob(digest(300)))?.state, 'pending');
    });

    test('layers: recorded once, leased like blobs, extract jobs sent once per window, a blob failure shown on a pending layer', async () => {
      await catalog.recordLayer(layerSource(400, 401), 1000);
      await catalog.recordLayer({ ...layerSource(400, 402) }, 1000);
      assert.equal((await catalog.layer(digest(400)))?.blobDigest, digest(401));
      await catalog.recordLayer(layerSource(410, 411), 1000);
      assert.deepEqual((await catalog.layers([digest(400), digest(410), digest(400), digest(999)])).map((l) => l.diffId).sort(), [digest(400), digest(410)]);
      assert.deepEqual((await catalog.markExtractSent([digest(400), digest(410)], 1000, 1000 - 60_000)).sort(), [digest(400), digest(410)]);
      assert.deepEqual(await catalog.markExtractSent([digest(400)], 2000, 2000 - 60_000), [], 'sent recently');
      assert.deepEqual(await catalog.markExtractSent([digest(400)], 70_000, 70_000 - 60_000), [digest(400)], 'sent again after the window');
      await catalog.layerBlobFailed(digest(410), 'the layer blob could not be stored: BLOB_UNKNOWN', false, 3000);
      const failed = await catalog.layer(digest(410));
      assert.deepEqual([failed?.state, failed?.errorRetryable], ['failed', false]);
      const claim = await catalog.claim('layer', digest(400), 'x', 10_000, 4000);
      assert.equal(claim.claimed?.state, 'extracting');
      await catalog.layerBlobFailed(digest(400), 'not while extracting', true, 4001);
      assert.equal((await catalog.layer(digest(400)))?.state, 'extracting');
      await catalog.layerStored(digest(400), 'x', { size: 10, fileCount: 2, tocDigest: digest(5) }, 5000);
      const ready = await catalog.layer(digest(400));
      assert.deepEqual([ready?.state, ready?.size, ready?.fileCount, ready?.tocDigest], ['ready', 10, 2, digest(5)]);
    });

    test('pull tallies add up and last-pulled times only move forward', async () => {
      await catalog.recordBlob(blobSource(500, 1), 1000);
      await catalog.recordManifest({ digest: digest(501), mediaType: 'application/vnd.oci.image.index.v1+json', size: 1, storageKey: `manifests/sha256/${hex(501)}` }, [], 1000);
      await catalog.recordPulls([
        { kind: 'blob', digest: digest(500), count: 3, lastPulledAt: 5000 },
        { kind: 'manifest', digest: digest(501), count: 2, lastPulledAt: 6000 },
      ]);
      await catalog.recordPulls([{ kind: 'blob', digest: digest(500), count: 1, lastPulledAt: 4000 }]);
      const blob = await catalog.blob(digest(500));
      assert.deepEqual([blob?.pullCount, blob?.lastPulledAt], [4, 5000]);
      const manifest = await catalog.manifest(digest(501));
      assert.deepEqual([manifest?.pullCount, manifest?.lastPulledAt], [2, 6000]);
    });

    test('usage sums what is ready, and eviction order is least recently pulled first', async () => {
      const fresh = await adapter.database('usage');
      const { db, close: closeFresh } = await openDatabase(fresh.url, fresh.authToken);
      const c = catalogOf(adapter, new LibsqlCatalog(db));
      try {
        assert.deepEqual(await c.usage(), { blobs: 0, blobBytes: 0, layers: 0, layerBytes: 0 });
        for (const [n, size, readyAt] of [[600, 10, 1000], [601, 20, 2000], [602, 30, 3000], [603, 40, 4000]] as const) {
          await c.recordBlob(blobSource(n, size), 0);
          await c.claim('blob', digest(n), 'w', 10_000, readyAt);
          if (n !== 603) await c.blobStored(digest(n), 'w', size, readyAt);
        }
        await c.recordLayer(layerSource(610, 600), 0);
        await c.claim('layer', digest(610), 'w', 10_000, 0);
        await c.layerStored(digest(610), 'w', { size: 100, fileCount: 1, tocDigest: digest(1) }, 0);
        assert.deepEqual(await c.usage(), { blobs: 3, blobBytes: 60, layers: 1, layerBytes: 100 }, 'the blob still fetching is not counted');
        await c.recordPulls([{ kind: 'blob', digest: digest(600), count: 1, lastPulledAt: 5000 }]);
        assert.deepEqual(await c.leastRecentlyPulled(10), [
          { digest: digest(601), size: 20, lastPulledAt: 2000 },
          { digest: digest(602), size: 30, lastPulledAt: 3000 },
          { digest: digest(600), size: 10, lastPulledAt: 5000 },
        ]);
        assert.equal((await c.leastRecentlyPulled(1)).length, 1);
      } finally {
        closeFresh();
      }
    });

    test('eviction: only a ready blob not pulled since the bound, under a lease no transfer takes until it ends; its layers follow; the maintenance lease is one at a time', async () => {
      const fresh = await adapter.database('eviction');
      const { db, close: closeFresh } = await openDatabase(fresh.url, fresh.authToken);
      const c = catalogOf(adapter, new LibsqlCatalog(db));
      try {
        await c.recordBlob(blobSource(700, 10), 0);
        await c.claim('blob', digest(700), 'w', 10_000, 1000);
        await c.blobStored(digest(700), 'w', 10, 1000);
        await c.recordLayer(layerSource(710, 700), 0);
        await c.claim('layer', digest(710), 'w', 10_000, 1000);
        await c.layerStored(digest(710), 'w', { size: 100, fileCount: 1, tocDigest: digest(1) }, 1000);
        await c.recordInRepository(target, digest(700), 0);
        assert.deepEqual(await c.repositoriesReaching(digest(700)), [target]);
        assert.deepEqual((await c.readyLayersOf(digest(700))).map((l) => l.diffId), [digest(710)]);
        assert.equal(await c.beginEviction('blob', digest(700), 'gc', 5000, 999, 2000), undefined, 'pulled (made ready) after the bound');
        assert.deepEqual(await c.layersOfEvicted(10), [], 'its blob is ready');
        assert.equal(await c.beginEviction('layer', digest(710), 'gc', 5000, 2000, 2000), undefined, 'a layer goes only after its blob');
        const row = await c.beginEviction('blob', digest(700), 'gc', 5000, 1000, 2000);
        assert.equal(row?.state, 'evicted');
        assert.equal(await c.beginEviction('blob', digest(700), 'gc2', 5000, 1000, 2000), undefined, 'once');
        assert.equal((await c.claim('blob', digest(700), 't', 5000, 3000)).claimed, undefined, 'no transfer under the eviction lease');
        assert.deepEqual((await c.layersOfEvicted(10)).map((l) => l.diffId), [digest(710)]);
        assert.equal((await c.beginEviction('layer', digest(710), 'gc', 5000, 2000, 2000))?.state, 'extracting');
        assert.equal((await c.claim('layer', digest(710), 'x', 5000, 3000)).claimed, undefined, 'no extraction under it');
        await c.endEviction('layer', digest(710), 'gc', 3000);
        assert.deepEqual([(await c.layer(digest(710)))?.state, (await c.layer(digest(710)))?.size], ['pending', null]);
        await c.endEviction('blob', digest(700), 'gc', 3000);
        assert.equal((await c.claim('blob', digest(700), 't', 5000, 3000)).claimed?.state, 'fetching', 'fetched again once it ends');
        assert.deepEqual(await c.usage(), { blobs: 0, blobBytes: 0, layers: 0, layerBytes: 0 });

        assert.equal(await c.claimMaintenance('gc', 'a', 1000, 0), true);
        assert.equal(await c.claimMaintenance('gc', 'b', 1000, 500), false, 'held');
        assert.equal(await c.renewMaintenance('gc', 'a', 1000, 900), true);
        assert.equal(await c.renewMaintenance('gc', 'b', 1000, 900), false);
        assert.equal(await c.claimMaintenance('gc', 'b', 1000, 1950), true, 'taken over once it ran out');
        await c.releaseMaintenance('gc', 'a', 2000);
        assert.equal(await c.claimMaintenance('gc', 'c', 1000, 2000), false, 'a release by a former owner changes nothing');
        await c.releaseMaintenance('gc', 'b', 2000);
        assert.equal(await c.claimMaintenance('gc', 'c', 1000, 2000), true);
      } finally {
        closeFresh();
      }
    });

    test('activity windows sum what every flush adds; upstream health keeps the latest success and error; old windows go', async () => {
      const fresh = await adapter.database('activity');
      const { db, close: closeFresh } = await openDatabase(fresh.url, fresh.authToken);
      const c = catalogOf(adapter, new LibsqlCatalog(db));
      try {
        await c.recordActivity({ rows: [{ bucket: 0, metric: 'cache:blob:hit', value: 2 }, { bucket: 300_000, metric: 'cache:blob:hit', value: 1 }], health: [{ host: 'docker.io', lastSuccessAt: 100, lastErrorAt: 50, lastError: 'HTTP 503' }] });
        await c.recordActivity({ rows: [{ bucket: 0, metric: 'cache:blob:hit', value: 3 }], health: [{ host: 'docker.io', lastSuccessAt: 90, lastErrorAt: 200, lastError: 'HTTP 429' }] });
        await c.recordActivity({ rows: [], health: [{ host: 'docker.io', lastSuccessAt: 300, lastErrorAt: null, lastError: null }] });
        assert.deepEqual(await c.activitySince(0), [
          { bucket: 0, metric: 'cache:blob:hit', value: 5 },
          { bucket: 300_000, metric: 'cache:blob:hit', value: 1 },
        ]);
        assert.deepEqual(await c.activitySince(1), [{ bucket: 300_000, metric: 'cache:blob:hit', value: 1 }]);
        assert.deepEqual(await c.upstreamHealth(), [{ host: 'docker.io', lastSuccessAt: 300, lastErrorAt: 200, lastError: 'HTTP 429' }]);
        assert.equal(await c.removeActivity(300_000, true), 1, 'a dry run counts');
        assert.equal((await c.activitySince(0)).length, 2);
        assert.equal(await c.removeActivity(300_000, false), 1);
        assert.deepEqual((await c.activitySince(0)).map((r) => r.bucket), [300_000]);
      } finally {
        closeFresh();
      }
    });

    test('key holders: a ready or leased row holds its key, others are idle and the sweep takes them under a lease; the status reads', async () => {
      const fresh = await adapter.database('holders');
      const { db, close: closeFresh } = await openDatabase(fresh.url, fresh.authToken);
      const c = catalogOf(adapter, new LibsqlCatalog(db));
      try {
        for (const n of [800, 801, 802]) await c.recordBlob(blobSource(n, 10), 0);
        await c.claim('blob', digest(800), 'w', 10_000, 0);
        await c.blobStored(digest(800), 'w', 10, 0);
        await c.claim('blob', digest(801), 'w', 10_000, 0);
        await c.recordLayer(layerSource(810, 800), 0);
        const key = (n: number) => blobKey(parseDigest(digest(n)));
        const layer = layerSource(810, 800);
        const holders = await c.keyHolders([key(800), key(801), key(802), key(899), layer.tarKey, layer.tocKey], 5000);
        assert.deepEqual(Object.fromEntries([...holders].map(([k, h]) => [k, h.state])), { [key(800)]: 'held', [key(801)]: 'held', [key(802)]: 'idle', [layer.tarKey]: 'idle', [layer.tocKey]: 'idle' });
        assert.equal((await c.keyHolders([key(801)], 20_000)).get(key(801))?.state, 'idle', 'a lease that ran out holds nothing');
        assert.equal(await c.beginSweep('blob', digest(800), 'gc', 1000, 5000), false, 'a ready blob is never swept');
        assert.equal(await c.beginSweep('blob', digest(801), 'gc', 1000, 5000), false, 'nor one being fetched');
        assert.equal(await c.beginSweep('blob', digest(802), 'gc', 1000, 5000), true);
        assert.equal((await c.blob(digest(802)))?.state, 'evicted');
        assert.equal((await c.claim('blob', digest(802), 't', 1000, 5500)).claimed, undefined, 'no transfer while the sweep holds it');
        await c.endEviction('blob', digest(802), 'gc', 5500);
        assert.equal((await c.claim('blob', digest(802), 't', 1000, 5500)).claimed?.state, 'fetching');
        assert.equal(await c.beginSweep('layer', digest(810), 'gc', 1000, 5000), true);
        assert.equal((await c.claim('layer', digest(810), 'x', 1000, 5500)).claimed, undefined);
        await c.endEviction('layer', digest(810), 'gc', 5500);
        assert.equal((await c.layer(digest(810)))?.state, 'pending');

        assert.deepEqual(await c.inFlight(5600), { transfers: 2, extractions: 0 }, '801 and 802 under live leases');
        await c.fail('blob', digest(802), 't', { message: 'UPSTREAM_INVALID: content does not match its digest', retryable: true }, 6000);
        assert.deepEqual(
          (await c.recentFailures(5)).map((f) => [f.kind, f.id, f.source, f.error]),
          [['blob', digest(802), 'docker.io/library/conformance', 'UPSTREAM_INVALID: content does not match its digest']],
        );
        await c.recordManifest({ digest: digest(820), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 100, storageKey: 'manifests/sha256/x' }, [{ digest: digest(800), kind: 'layer', position: 0 }], 0);
        await c.putTag(target, 'v1', digest(820), 0);
        await c.recordPulls([{ kind: 'manifest', digest: digest(820), count: 3, lastPulledAt: 7000 }]);
        assert.deepEqual(await c.topRepositories(5), [{ ...target, pulls: 3, bytes: 10, lastPulledAt: 7000 }]);
      } finally {
        closeFresh();
      }
    });

    test('several processes writing at once lose nothing: every call succeeds and each row has one winner', async () => {
      const db = await adapter.database('processes');
      // Migrate once, as the first server to start does.
      (await openDatabase(db.url, db.authToken)).close();
      const writers = ['p1', 'p2', 'p3', 'p4'];
      const count = 60;
      const results = await Promise.all(
        writers.map(async (who) => {
          const { stdout } = await run(process.execPath, [join(import.meta.dirname, '../setup/catalog-writer.ts'), db.url, db.authToken ?? '', who, String(count)], { maxBuffer: 16 * 1024 * 1024 });
          return JSON.parse(stdout.trim().split('\n').at(-1)!) as { who: string; claimed: string[]; jobs: string[]; errors: string[] };
        }),
      );
      assert.deepEqual(results.flatMap((r) => r.errors), [], 'no call failed');
      const claimed = results.flatMap((r) => r.claimed);
      assert.equal(claimed.length, count, 'every blob claimed once across the processes');
      assert.equal(new Set(claimed).size, count);
      const { db: check, close: closeCheck } = await openDatabase(db.url, db.authToken);
      const view = new LibsqlCatalog(check);
      for (let i = 0; i < count; i++) {
        const row = await view.blob(`sha256:${i.toString(16).padStart(64, '0')}`);
        assert.equal(row?.state, 'ready');
        assert.equal(row?.pullCount, writers.length, 'every pull counted');
      }
      const states = await check.all<{ state: string; n: number }>('SELECT state, count(*) AS n FROM jobs GROUP BY state');
      assert.ok(states.every((s) => s.state === 'done' || s.state === 'queued'), `jobs done or queued, none lost mid-run: ${JSON.stringify(states)}`);
      assert.ok(results.some((r) => r.jobs.length > 0), 'jobs were claimed');
      closeCheck();
    });
  });
}
