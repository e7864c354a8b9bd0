// The in-process caches (core/registry/memory-cache.ts) where another process changes the
// truth: two servers as `npm start` runs them, on one libSQL database and one bucket (Ceph
// RGW, blobs handed out as presigned redirects). A tag moved upstream is seen by both once
// its TTL has run out; a blob the other process evicts is never served from a stale
// entry (garbage collection waits out MEMORY_CACHE_TTL_SECONDS before deleting, so a
// redirect from an entry still in its TTL finds its object, and a HEAD given again from it
// stops with it); a revoked rule stops a pull
// on a process as soon as it runs with the new rules.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { MANIFEST_MEDIA_TYPES } from '../../core/oci/manifest.ts';
import { digestOf } from '../../core/oci/digest.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { basic, startServer, type Server } from '../setup/server.ts';
import { s3ServerEnv, s3TestBucket } from '../setup/s3.ts';
import { until } from '../setup/process.ts';

const TAG_TTL_SECONDS = 3;
const MEMORY_CACHE_TTL_SECONDS = 10;
const ACCEPT = { accept: MANIFEST_MEDIA_TYPES.join(', ') };
const OP = basic('op', 'op-pass');
const ALICE = basic('alice', 'alice-pass');
const RULES = 'pull docker.io/library/* to anonymous; pull docker.io/team/* to alice; admin to op';

let registry: Registry;
let dir: string;
let env: Record<string, string>;
let a: Server;
let b: Server;
let first: BuiltImage;

before(async () => {
  registry = await startRegistry();
  first = await pushImage(registry, 'library/moving', 'v1', [{ 'etc/first': randomBytes(300_000) }]);
  await pushImage(registry, 'team/app', '1', [{ 'etc/app': 'app\n' }]);
  const bucket = (await s3TestBucket('memory-cache'))!;
  dir = await mkdtemp(join(tmpdir(), 'pt-memory-cache-'));
  env = {
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }),
    ...s3ServerEnv(bucket.bucket),
    BLOB_DELIVERY: 'redirect',
    TAG_TTL_SECONDS: String(TAG_TTL_SECONDS),
    MEMORY_CACHE_TTL_SECONDS: String(MEMORY_CACHE_TTL_SECONDS),
    // Pulls are not written during the test: the blob's last pull stays what the test sets.
    PULL_FLUSH_SECONDS: '3600',
    GC_INTERVAL_SECONDS: '0',
    CACHE_MAX_BYTES: '1',
    AUTH_USERS: JSON.stringify({ op: await hashPassword('op-pass'), alice: await hashPassword('alice-pass') }),
    AUTH_TOKEN_KEYS: `k1:${randomBytes(32).toString('base64url')}`,
    AUTH_RULES: RULES,
  };
  // One after the other, as a supervisor starts them: the first applies the migrations.
  a = await startServer(env);
  b = await startServer(env);
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const tagDigest = async (s: Server, name: string, tag: string) => {
  const res = await fetch(`${s.url}/v2/${name}/manifests/${tag}`, { headers: ACCEPT });
  assert.equal(res.status, 200, await res.clone().text());
  await res.arrayBuffer();
  return res.headers.get('docker-content-digest');
};

test('a tag moved upstream is seen by both processes once its TTL has run out, and not before a resolution is that old', async () => {
  // The resolution is timed from the start of the first request (its upstream HEAD): no earlier.
  const resolvedFrom = Date.now();
  assert.equal(await tagDigest(a, 'library/moving', 'v1'), first.manifestDigest);
  assert.equal(await tagDigest(b, 'library/moving', 'v1'), first.manifestDigest);
  const moved = await pushImage(registry, 'library/moving', 'v1', [{ 'etc/second': randomBytes(300_000) }]);
  assert.notEqual(moved.manifestDigest, first.manifestDigest);
  for (const s of [a, b]) {
    await until(async () => (await tagDigest(s, 'library/moving', 'v1')) === moved.manifestDigest, 30_000, 'the moved tag');
  }
  assert.ok(Date.now() - resolvedFrom >= TAG_TTL_SECONDS * 1000, 'the old digest was kept for its TTL at least');
});

/** A blob GET on `s` as a client does it: a 307 followed to the bucket, or the body itself. */
const pullBlob = async (s: Server, name: string, digest: string): Promise<{ status: number; bucketStatus?: number; digest?: string }> => {
  const res = await fetch(`${s.url}/v2/${name}/blobs/${digest}`, { redirect: 'manual' });
  if (res.status !== 307) return { status: res.status, digest: res.ok ? digestOf(new Uint8Array(await res.arrayBuffer())) : (await res.text(), undefined) };
  const object = await fetch(res.headers.get('location')!);
  const bytes = new Uint8Array(await object.arrayBuffer());
  return { status: 307, bucketStatus: object.status, digest: object.ok ? digestOf(bytes) : undefined };
};

test('a blob the other process evicts is not served from a stale entry: a redirect from it still finds the object, and the entry is gone when the objects are', async () => {
  const blob = first.layers[0]!.digest;
  const name = 'library/moving';
  const { db, close } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`);
  try {
    const state = async () => (await db.all<{ state: string }>(sql`SELECT state FROM blobs WHERE digest = ${blob}`))[0]?.state;
    await until(async () => (await pullBlob(a, name, blob)).status === 307, 60_000, 'the blob stored and redirected to');
    // Not pulled for long: retention may take it (the guard would otherwise keep it a minute and more).
    await db.run(sql`UPDATE blobs SET last_pulled_at = 0, ready_at = 0`);
    // A's entry is fresh now, and its HEAD is given again from it (functions/replay.ts); B evicts the blob while it is.
    assert.deepEqual(await pullBlob(a, name, blob), { status: 307, bucketStatus: 200, digest: blob });
    const kept = Date.now();
    const head = () => fetch(`${a.url}/v2/${name}/blobs/${blob}`, { method: 'HEAD' });
    const replayedHeads = () => a.output().split('\n').filter((l) => l.includes('"method":"HEAD"') && l.includes(`/blobs/${blob}`) && l.includes('"replayed":true')).length;
    for (let i = 0; i < 2; i++) assert.equal((await head()).status, 200);
    await until(async () => replayedHeads() === 1, 10_000, "A's blob HEAD given again");
    const gc = fetch(`${b.url}/api/gc`, { method: 'POST', headers: OP });
    await until(async () => (await state()) === 'evicted', 30_000, 'the row marked evicted');
    const stale = await pullBlob(a, name, blob);
    assert.ok(Date.now() - kept < MEMORY_CACHE_TTL_SECONDS * 1000, 'asked while the entry was in its TTL');
    assert.deepEqual(stale, { status: 307, bucketStatus: 200, digest: blob }, 'the stale entry redirects to an object that is still there');
    const report = (await (await gc).json()) as { totals: Record<string, { count: number }> };
    assert.ok((report.totals.blob?.count ?? 0) >= 1, JSON.stringify(report.totals));
    // The objects are gone now, and so is A's entry (it was read before the mark, the delete came a TTL after).
    assert.equal(await state(), 'evicted');
    const upstreamHeads = async () => (await registry.settledRequests()).filter((r) => r.method === 'HEAD' && r.path.endsWith(`/blobs/${blob}`)).length;
    const headsBefore = await upstreamHeads();
    assert.equal((await head()).status, 200);
    assert.equal(await upstreamHeads(), headsBefore + 1, "A's HEAD is asked of the upstream: its kept answer went with the entry");
    assert.equal(replayedHeads(), 1);
    const after = await pullBlob(a, name, blob);
    assert.deepEqual(after, { status: 200, digest: blob }, 'fetched again from the upstream, not redirected to the deleted object');
  } finally {
    close();
  }
});

test('a revoked rule stops a pull on a process as soon as it runs with the new rules, for Basic credentials and for tokens issued before', async () => {
  const manifest = (s: Server, headers: Record<string, string>) => fetch(`${s.url}/v2/team/app/manifests/1`, { headers: { ...ACCEPT, ...headers } });
  assert.equal((await manifest(a, ALICE)).status, 200);
  const issued = (await (await fetch(`${a.url}/token?service=pullthrough&scope=${encodeURIComponent('repository:team/app:pull')}`, { headers: ALICE })).json()) as { token: string };
  const bearer = { authorization: `Bearer ${issued.token}` };
  assert.equal((await manifest(a, bearer)).status, 200);

  await a.stop();
  a = await startServer({ ...env, AUTH_RULES: 'pull docker.io/library/* to anonymous; admin to op' });
  const denied = await manifest(a, ALICE);
  assert.equal(denied.status, 403);
  assert.deepEqual(((await denied.json()) as { errors: Array<{ code: string }> }).errors.map((e) => e.code), ['DENIED']);
  const refused = await manifest(a, bearer);
  assert.equal(refused.status, 401, 'the token names a grant the rules no longer give');
  assert.match(refused.headers.get('www-authenticate') ?? '', /error="insufficient_scope"/);
  // The bound is each process's start: B runs with the old rules until it is restarted too.
  assert.equal((await manifest(b, ALICE)).status, 200);
});
