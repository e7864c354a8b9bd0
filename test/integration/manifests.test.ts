// Manifests through the Hono app, on a real registry, libSQL file and filesystem store.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '../../functions/app.ts';
import { openDatabase, type Database } from '../../core/db.ts';
import { LibsqlJobQueue } from '../../core/jobs.ts';
import { UpstreamRegistry } from '../../core/upstream.ts';
import { FilesystemBlobStore } from '../../core/store-fs.ts';
import { digestOf } from '../../core/digest.ts';
import { jobs } from '../../schema/jobs.ts';
import { startRegistry, pushImage, type Registry, type BuiltImage } from '../setup/registry.ts';

let registry: Registry;
let image: BuiltImage;
let dir: string;
let db: Database;
let close: () => void;
let app: ReturnType<typeof createApp>;
let now = Date.now();
const OCI = 'application/vnd.oci.image.manifest.v1+json';

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/small', '1', [{ 'etc/hello': 'hello\n' }]);
  dir = await mkdtemp(join(tmpdir(), 'pt-manifests-'));
  ({ db, close } = await openDatabase(`file:${join(dir, 'db.sqlite')}`));
  app = createApp({
    manifests: {
      db,
      store: new FilesystemBlobStore(join(dir, 'store')),
      upstreams: new Map([['docker.io', new UpstreamRegistry('docker.io', { url: registry.url }, { attempts: 1 })]]),
      queue: new LibsqlJobQueue(db),
      tagTtlSeconds: 60,
      now: () => now,
    },
    routing: { upstreamHosts: new Set(['docker.io']), defaultUpstream: 'docker.io' },
  });
});
after(async () => {
  close?.();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
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

test('with the upstream stopped, digests and recently resolved tags still work', async () => {
  await registry.stop();
  now += 120_000; // past the tag TTL: the HEAD fails and the last known digest is served
  const byTag = await app.request('/v2/small/manifests/1');
  assert.equal(byTag.status, 200);
  assert.equal(byTag.headers.get('docker-content-digest'), image.manifestDigest);
  const byDigest = await app.request(`/v2/small/manifests/${image.manifestDigest}`);
  assert.equal(byDigest.status, 200);
  const unknown = await app.request('/v2/small/manifests/never-seen');
  assert.equal(unknown.status, 503);
  assert.equal(((await unknown.json()) as any).errors[0].code, 'UNAVAILABLE');
});

test('bad names, tags and digests are the right OCI errors', async () => {
  const cases: Array<[string, number, string]> = [
    ['/v2/UPPER/manifests/1', 400, 'NAME_INVALID'],
    ['/v2/small/manifests/-bad', 400, 'TAG_INVALID'],
    ['/v2/small/manifests/sha256:123', 400, 'DIGEST_INVALID'],
    ['/v2/small/manifests/1?ns=evil.example', 403, 'DENIED'],
  ];
  for (const [path, status, code] of cases) {
    const res = await app.request(path);
    assert.equal(res.status, status, path);
    assert.equal(((await res.json()) as any).errors[0].code, code, path);
  }
});
