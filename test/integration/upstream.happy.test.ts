// The upstream client against a real registry (Debian's docker-registry), with an image
// pushed by skopeo: manifests resolve by tag and digest, blobs stream through the
// verifier into a real store.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UpstreamRegistry } from '../../core/adapters/http-upstream.ts';
import { MANIFEST_MEDIA_TYPES, parseManifest } from '../../core/oci/manifest.ts';
import { digestOf } from '../../core/oci/digest.ts';
import { FilesystemBlobStore } from '../../core/adapters/fs-store.ts';
import { parseDigest } from '../../core/oci/reference.ts';
import { blobKey } from '../../core/oci/keys.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';

let registry: Registry;
let image: BuiltImage;
let upstream: UpstreamRegistry;
const accept = { accept: MANIFEST_MEDIA_TYPES.join(', ') };

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/small', '1', [{ 'etc/hello': 'hello\n' }, { 'usr/bin/tool': Buffer.alloc(100_000, 7) }]);
  upstream = new UpstreamRegistry('docker.io', { url: registry.url });
});
after(async () => {
  await registry?.stop();
});

test('a tag resolves with HEAD to the pushed digest, without a body', async () => {
  const res = await upstream.request('HEAD', '/v2/library/small/manifests/1', 'library/small', accept);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-content-digest'), image.manifestDigest);
  assert.equal(res.headers.get('content-type'), 'application/vnd.oci.image.manifest.v1+json');
});

test('a manifest by digest comes back byte-exact and parses', async () => {
  const res = await upstream.request('GET', `/v2/library/small/manifests/${image.manifestDigest}`, 'library/small', accept);
  const bytes = new Uint8Array(await res.arrayBuffer());
  assert.equal(digestOf(bytes), image.manifestDigest);
  const parsed = parseManifest(bytes, res.headers.get('content-type') ?? undefined);
  assert.equal(parsed.kind, 'image');
  assert.deepEqual(parsed.kind === 'image' && parsed.layers.map((l) => l.digest), image.layers.map((l) => l.digest));
});

test('a layer streams from the upstream through verification into the store', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'pt-up-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const store = new FilesystemBlobStore(root);
  const layer = image.layers[1]!;
  const res = await upstream.request('GET', `/v2/library/small/blobs/${layer.digest}`, 'library/small');
  assert.equal(res.status, 200);
  const key = blobKey(parseDigest(layer.digest));
  assert.deepEqual(await store.put(key, res.body!, { expected: { digest: layer.digest, size: layer.size } }), { size: layer.size });
  assert.deepEqual(await store.stat(key), { size: layer.size });
  assert.ok(registry.requests().some((r) => r.method === 'GET' && r.path === `/v2/library/small/blobs/${layer.digest}`));
});

test('unknown manifests pass the upstream 404 and its OCI error through', async () => {
  const res = await upstream.request('GET', '/v2/library/small/manifests/nope', 'library/small', accept);
  assert.equal(res.status, 404);
  const body = (await res.json()) as { errors: Array<{ code: string }> };
  assert.equal(body.errors[0]?.code, 'MANIFEST_UNKNOWN');
});

test('an unreachable upstream is UNAVAILABLE after retries, naming no URL', async () => {
  const down = new UpstreamRegistry('docker.io', { url: 'http://127.0.0.1:9', username: 'u', password: 'secret-pw' }, { attempts: 2, backoffBaseMs: 1 });
  await assert.rejects(down.request('GET', '/v2/library/small/manifests/1', 'library/small'), (e: any) => {
    assert.equal(e.code, 'UNAVAILABLE');
    assert.doesNotMatch(JSON.stringify({ m: e.message, d: e.detail }), /secret-pw|127\.0\.0\.1:9/);
    return true;
  });
});
