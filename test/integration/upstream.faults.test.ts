// Upstream misbehaviour through a real HTTP hop in front of the registry: Docker Hub's
// 429 rate limit (passed through when nothing is cached, the last known digest or tag
// list served when one was fetched before) and a manifest over the 4 MiB limit (refused,
// nothing stored).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { eq } from 'drizzle-orm';
import { manifests } from '../../schema/manifests.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startFaultyProxy } from '../setup/faulty-proxy.ts';
import { createTestApp, type TestApp } from '../setup/app.ts';

let registry: Registry;
let proxy: Awaited<ReturnType<typeof startFaultyProxy>>;
let image: BuiltImage;
let other: BuiltImage;
let t: TestApp;

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/limited', '1', [{ 'etc/limited': 'yes\n' }]);
  other = await pushImage(registry, 'library/limited', '2', [{ 'etc/other': 'yes\n' }]);
  proxy = await startFaultyProxy(registry.url);
  t = await createTestApp(proxy.url, 60);
});
after(async () => {
  await t?.close();
  await proxy?.stop();
  await registry?.stop();
});

const errorOf = async (res: Response) => ((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code;

test('429 with nothing cached is TOOMANYREQUESTS with Retry-After; a resolved tag is served stale', async () => {
  proxy.fault = 'ratelimit';
  const limited = await t.app.request('/v2/limited/manifests/1');
  assert.equal(limited.status, 429);
  assert.equal(limited.headers.get('retry-after'), '7');
  assert.equal(await errorOf(limited), 'TOOMANYREQUESTS');
  const blob = await t.app.request(`/v2/limited/blobs/${image.layers[0]!.digest}`);
  assert.equal(blob.status, 429, 'an unstored blob is rate-limited too');
  assert.equal(await errorOf(blob), 'TOOMANYREQUESTS');

  proxy.fault = 'none';
  assert.equal((await t.app.request('/v2/limited/manifests/1')).status, 200);
  t.advance(120_000); // past the tag TTL: the next pull asks the upstream again
  proxy.fault = 'ratelimit';
  const stale = await t.app.request('/v2/limited/manifests/1');
  assert.equal(stale.status, 200);
  assert.equal(stale.headers.get('docker-content-digest'), image.manifestDigest);
});

test('tags/list: 429 with nothing remembered; once listed whole, the last list is served (and paged) while the upstream refuses', async () => {
  proxy.fault = 'ratelimit';
  const limited = await t.app.request('/v2/limited/tags/list');
  assert.equal(limited.status, 429);
  assert.equal(await errorOf(limited), 'TOOMANYREQUESTS');

  proxy.fault = 'none';
  const paged = await t.app.request('/v2/limited/tags/list?n=1');
  assert.equal(paged.status, 200);
  proxy.fault = 'ratelimit';
  assert.equal((await t.app.request('/v2/limited/tags/list')).status, 429, 'a page is not the whole list: nothing remembered');

  proxy.fault = 'none';
  const fresh = (await (await t.app.request('/v2/limited/tags/list')).json()) as { tags: string[] };
  assert.deepEqual([...fresh.tags].sort(), ['1', '2']);
  proxy.fault = 'ratelimit';
  const stale = await t.app.request('/v2/limited/tags/list');
  assert.equal(stale.status, 200);
  assert.deepEqual(await stale.json(), { name: 'limited', tags: fresh.tags }, 'as the upstream listed them');
  const first = await t.app.request('/v2/limited/tags/list?n=1');
  assert.deepEqual(await first.json(), { name: 'limited', tags: ['1'] });
  assert.equal(first.headers.get('link'), '</v2/limited/tags/list?n=1&last=1>; rel="next"');
  assert.deepEqual(await (await t.app.request('/v2/limited/tags/list?n=1&last=1')).json(), { name: 'limited', tags: ['2'] });
  proxy.fault = 'none';
});

test('a manifest over 4 MiB is refused as UPSTREAM_INVALID and nothing is stored', async () => {
  proxy.fault = 'hugemanifest';
  const res = await t.app.request(`/v2/limited/manifests/${other.manifestDigest}`);
  assert.equal(res.status, 502);
  assert.equal(await errorOf(res), 'UPSTREAM_INVALID');
  assert.deepEqual(await t.db.select().from(manifests).where(eq(manifests.digest, other.manifestDigest)), []);
  assert.equal(await t.store.stat(`manifests/sha256/${other.manifestDigest.slice(7)}`), undefined);
  proxy.fault = 'none';
  const fine = await t.app.request(`/v2/limited/manifests/${other.manifestDigest}`);
  assert.equal(fine.status, 200, 'the same digest from a sane upstream');
});
