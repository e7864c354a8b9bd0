// Manifests and blobs through the Hono app, on a real registry, libSQL file and filesystem store.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Database } from '../../core/adapters/libsql.ts';
import { digestOf } from '../../core/oci/digest.ts';
import { eq } from 'drizzle-orm';
import { jobs } from '../../schema/jobs.ts';
import { blobs } from '../../schema/blobs.ts';
import { manifests } from '../../schema/manifests.ts';
import { ingestBlob, type IngestDeps } from '../../core/cache/ingest.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, pushIndex, upstreamBlob, type BuiltImage, type BuiltIndex } from '../setup/images.ts';
import { createTestApp, type TestApp } from '../setup/app.ts';
import { until } from '../setup/process.ts';

let registry: Registry;
let image: BuiltImage;
let layerBytes: Buffer;
let multi: BuiltIndex;
let db: Database;
let close: TestApp['close'];
let advance: TestApp['advance'];
let app: TestApp['app'];
let ingestDeps: IngestDeps;
let deps: TestApp['deps'];
const OCI = 'application/vnd.oci.image.manifest.v1+json';

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/small', '1', [{ 'etc/hello': 'hello\n' }]);
  layerBytes = await upstreamBlob(registry, 'library/small', image.layers[0]!.digest);
  for (const tag of ['2', '3']) await pushImage(registry, 'library/small', tag, [{ tag }]);
  multi = await pushIndex(registry, 'library/multi', 'latest', [
    { platform: { os: 'linux', architecture: 'arm64' }, layerFiles: [{ arch: 'arm64' }] },
    { platform: { os: 'linux', architecture: 'amd64' }, layerFiles: [{ arch: 'amd64' }] },
  ]);
  ({ app, db, ingestDeps, deps, advance, close } = await createTestApp(registry.url));
});
after(async () => {
  await close?.();
  await registry?.stop();
});

test('a tag pull returns the exact upstream bytes and enqueues config and layers once', async () => {
  const res = await app.request('/v2/small/manifests/1', { headers: { accept: OCI } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), OCI);
  assert.equal(res.headers.get('docker-content-digest'), image.manifestDigest);
  const bytes = new Uint8Array(await res.arrayBuffer());
  assert.equal(digestOf(bytes), image.manifestDigest);
  assert.equal(res.headers.get('content-length'), String(bytes.length));
  await app.request('/v2/small/manifests/1');
  const queued = (await db.select().from(jobs)).map((j) => j.key).sort();
  assert.deepEqual(queued, [image.configDigest, ...image.layers.map((l) => l.digest)].map((d) => `ingest:${d}`).sort());
});

test('HEAD gives the headers and no body', async () => {
  const res = await app.request(`/v2/library/small/manifests/${image.manifestDigest}`, { method: 'HEAD' });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-content-digest'), image.manifestDigest);
  assert.equal((await res.arrayBuffer()).byteLength, 0);
});

const blobGets = () => registry.requests().filter((r) => r.method === 'GET' && r.path.includes('/blobs/')).length;

test('a cold blob streams to the client from its one transfer, an ingest job ensured; HEAD neither downloads nor enqueues', async () => {
  const layer = image.layers[0]!;
  await db.delete(jobs);
  const head = await app.request(`/v2/small/blobs/${layer.digest}`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), String(layer.size));
  assert.equal((await db.select().from(jobs)).length, 0, 'HEAD enqueues nothing');
  const res = await app.request(`/v2/small/blobs/${layer.digest}`);
  assert.equal(res.status, 200);
  assert.ok(Buffer.from(await res.arrayBuffer()).equals(layerBytes));
  assert.deepEqual((await db.select().from(jobs)).map((j) => j.key), [`ingest:${layer.digest}`]);
});

test('once stored by its cold GET, a blob is served from the store with Range, and the upstream is not asked', async () => {
  const layer = image.layers[0]!;
  // The cold GET before was the blob's one transfer: it stored the blob, and the ingest job finds nothing left to fetch.
  await until(async () => (await db.select().from(blobs).where(eq(blobs.digest, layer.digest)))[0]?.state === 'ready', 10_000, 'the transfer to publish');
  assert.deepEqual(await ingestBlob(ingestDeps, layer.digest, 'w'), { ok: true, outcome: 'already-ready' });
  const before = blobGets();
  const whole = await app.request(`/v2/small/blobs/${layer.digest}`);
  assert.equal(whole.status, 200);
  assert.equal(whole.headers.get('docker-content-digest'), layer.digest);
  assert.ok(Buffer.from(await whole.arrayBuffer()).equals(layerBytes));
  const part = await app.request(`/v2/small/blobs/${layer.digest}`, { headers: { range: 'bytes=2-5' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), `bytes 2-5/${layer.size}`);
  assert.ok(Buffer.from(await part.arrayBuffer()).equals(layerBytes.subarray(2, 6)));
  const bad = await app.request(`/v2/small/blobs/${layer.digest}`, { headers: { range: `bytes=${layer.size}-` } });
  assert.equal(bad.status, 416);
  assert.equal(((await bad.json()) as any).errors[0].code, 'RANGE_INVALID');
  assert.equal(blobGets(), before, 'no upstream blob request for a warm pull');
});

test('pulls of stored blobs and manifests are counted off the request path: no write per GET, one batch per PULL_FLUSH_SECONDS', async () => {
  const layer = image.layers[0]!;
  assert.equal((await app.request('/v2/small/manifests/1')).status, 200);
  await ingestBlob(ingestDeps, layer.digest, 'w');
  await deps.pulls.flush();
  const counts = async () => {
    const [b] = await db.select().from(blobs).where(eq(blobs.digest, layer.digest));
    const [m] = await db.select().from(manifests).where(eq(manifests.digest, image.manifestDigest));
    return { blob: b!.pullCount, blobAt: b!.lastPulledAt, manifest: m!.pullCount };
  };
  const start = await counts();
  for (let i = 0; i < 3; i++) {
    const res = await app.request(`/v2/small/blobs/${layer.digest}`);
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    assert.equal((await app.request(`/v2/small/blobs/${layer.digest}`, { method: 'HEAD' })).status, 200);
  }
  assert.equal((await app.request(`/v2/small/manifests/${image.manifestDigest}`)).status, 200);
  assert.deepEqual(await counts(), start, 'nothing written while the batch is not due');
  advance(10_001);
  const pulledAt = Date.now();
  const due = await app.request(`/v2/small/blobs/${layer.digest}`);
  await due.arrayBuffer();
  await until(async () => (await counts()).blob === start.blob + 4, 10_000, 'the batch write');
  const after = await counts();
  assert.equal(after.manifest, start.manifest + 1, 'the manifest GET, in the same batch');
  assert.ok(after.blobAt! >= pulledAt, 'last pulled time moved forward');
});

test('concurrent requests for one cold tag make one upstream HEAD and one manifest GET', async () => {
  const cold = await pushImage(registry, 'library/coalesce', '1', [{ 'etc/coalesce': 'one\n' }]);
  const asked = (method: string, path: string) => registry.requests().filter((r) => r.method === method && r.path === path).length;
  const answers = await Promise.all(
    Array.from({ length: 10 }, async (_, i) => {
      const res = await app.request('/v2/coalesce/manifests/1', { method: i % 3 === 0 ? 'HEAD' : 'GET', headers: { accept: OCI } });
      await res.arrayBuffer();
      return [res.status, res.headers.get('docker-content-digest')];
    }),
  );
  assert.deepEqual(answers, Array(10).fill([200, cold.manifestDigest]));
  // The registry logs a request when its response completes: once a later one is logged, these are too.
  const sentinel = `/v2/library/coalesce/tags/list?sentinel=${Date.now()}`;
  await fetch(`${registry.url}${sentinel}`).then((r) => r.arrayBuffer());
  await until(async () => asked('GET', sentinel) === 1, 10_000, 'the registry log');
  assert.equal(asked('HEAD', '/v2/library/coalesce/manifests/1'), 1, 'one tag resolution');
  assert.equal(asked('GET', `/v2/library/coalesce/manifests/${cold.manifestDigest}`), 1, 'one manifest fetch');
});

test('unknown and malformed blob digests are BLOB_UNKNOWN and DIGEST_INVALID', async () => {
  const unknown = await app.request(`/v2/small/blobs/sha256:${'d'.repeat(64)}`);
  assert.equal(unknown.status, 404);
  assert.deepEqual(await unknown.json(), { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry', detail: { digest: `sha256:${'d'.repeat(64)}` } }] });
  const malformed = await app.request('/v2/small/blobs/sha256:zz');
  assert.equal(malformed.status, 400);
  assert.equal(((await malformed.json()) as any).errors[0].code, 'DIGEST_INVALID');
});

const errorCode = async (res: Response) => ((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code;

test('tags/list pages with n, last and a Link under the client name', async () => {
  const all = await app.request('/v2/small/tags/list');
  assert.equal(all.status, 200);
  const direct = (await (await fetch(`${registry.url}/v2/library/small/tags/list`)).json()) as { tags: string[] };
  assert.deepEqual([...direct.tags].sort(), ['1', '2', '3']);
  assert.deepEqual(await all.json(), { name: 'small', tags: ['1', '2', '3'] }, "the upstream's tags in the spec's lexical order, whatever order it sent");
  const first = await app.request('/v2/small/tags/list?n=2');
  assert.deepEqual(await first.json(), { name: 'small', tags: ['1', '2'] });
  const link = first.headers.get('link');
  assert.equal(link, '</v2/small/tags/list?n=2&last=2>; rel="next"');
  const second = await app.request(/<([^>]+)>/.exec(link!)![1]!);
  assert.deepEqual(await second.json(), { name: 'small', tags: ['3'] });
  assert.equal(second.headers.get('link'), null);
  const viaNs = await app.request('/v2/library/small/tags/list?n=1&ns=docker.io');
  assert.equal(viaNs.headers.get('link'), '</v2/library/small/tags/list?n=1&last=1&ns=docker.io>; rel="next"');
  const badN = await app.request('/v2/small/tags/list?n=many');
  assert.equal(badN.status, 400);
  assert.equal(await errorCode(badN), 'PAGINATION_NUMBER_INVALID');
  const unknown = await app.request('/v2/never-pushed/tags/list');
  assert.equal(unknown.status, 404);
  assert.equal(await errorCode(unknown), 'NAME_UNKNOWN');
});

test('referrers: an upstream without the API gives 404 (clients fall back to tags); a bad digest is 400', async () => {
  const res = await app.request(`/v2/small/referrers/${image.manifestDigest}`);
  assert.equal(res.status, 404);
  assert.equal(await errorCode(res), 'NAME_UNKNOWN');
  const bad = await app.request('/v2/small/referrers/sha256:nope');
  assert.equal(bad.status, 400);
  assert.equal(await errorCode(bad), 'DIGEST_INVALID');
});

test('an index is served as is, or as its linux/amd64 child to a client that accepts no index', async () => {
  const INDEX = 'application/vnd.oci.image.index.v1+json';
  const asIndex = await app.request('/v2/multi/manifests/latest', { headers: { accept: `${INDEX}, ${OCI}` } });
  assert.equal(asIndex.headers.get('docker-content-digest'), multi.manifestDigest);
  assert.equal(asIndex.headers.get('content-type'), INDEX);
  const amd64 = multi.images[1]!;
  for (const method of ['GET', 'HEAD']) {
    const child = await app.request('/v2/multi/manifests/latest', { method, headers: { accept: OCI } });
    assert.equal(child.status, 200, method);
    assert.equal(child.headers.get('docker-content-digest'), amd64.manifestDigest, method);
    assert.equal(child.headers.get('content-type'), OCI, method);
  }
  const none = await app.request('/v2/multi/manifests/latest', { headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
  assert.equal(none.status, 404);
  assert.equal(await errorCode(none), 'MANIFEST_UNKNOWN');
});

test('with the upstream stopped, digests and recently resolved tags still work', async () => {
  await registry.stop();
  advance(120_000); // past the tag TTL: the HEAD fails and the last known digest is served
  const byTag = await app.request('/v2/small/manifests/1');
  assert.equal(byTag.status, 200);
  assert.equal(byTag.headers.get('docker-content-digest'), image.manifestDigest);
  const byDigest = await app.request(`/v2/small/manifests/${image.manifestDigest}`);
  assert.equal(byDigest.status, 200);
  const warmBlob = await app.request(`/v2/small/blobs/${image.layers[0]!.digest}`);
  assert.equal(warmBlob.status, 200, 'stored blobs outlive the upstream');
  const unknown = await app.request('/v2/small/manifests/never-seen');
  assert.equal(unknown.status, 503);
  assert.equal(((await unknown.json()) as any).errors[0].code, 'UNAVAILABLE');
});

test('bad names are NAME_INVALID; a manifest reference that is neither a tag nor a digest is MANIFEST_UNKNOWN, as distribution answers', async () => {
  const cases: Array<[string, number, string]> = [
    ['/v2/UPPER/manifests/1', 400, 'NAME_INVALID'],
    ['/v2/small/manifests/-bad', 404, 'MANIFEST_UNKNOWN'],
    ['/v2/small/manifests/sha256:123', 404, 'MANIFEST_UNKNOWN'],
    ['/v2/small/manifests/1?ns=evil.example', 403, 'DENIED'],
  ];
  for (const [path, status, code] of cases) {
    const res = await app.request(path);
    assert.equal(res.status, status, path);
    assert.equal(((await res.json()) as any).errors[0].code, code, path);
  }
});
