// The OCI distribution spec (v1.1), pull and content discovery, requirement by requirement,
// against the real server (filesystem store) in front of Debian's registry. Each test is
// named after the sentence it checks; what we pass through from the upstream (referrers)
// is checked for what the spec lets a proxy say.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { blobs } from '../../schema/blobs.ts';
import { eq } from 'drizzle-orm';

let dir: string;
let registry: Registry;
let server: Server;
let image: BuiltImage;
let layer: Buffer;
const TAGS = ['gamma', '1.0', 'Beta', 'alpha'];
const LEXICAL = ['1.0', 'alpha', 'Beta', 'gamma'];
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-spec-'));
  registry = await startRegistry();
  layer = randomBytes(300_000);
  for (const tag of TAGS) image = await pushImage(registry, 'library/spec', tag, [{ 'data.bin': layer }]);
  server = await startServer({ DATA_DIR: join(dir, 'data'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }) });
});
after(async () => {
  await server?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const get = (path: string, init?: RequestInit) => fetch(`${server.url}${path}`, init);
const ociError = async (res: Response) => {
  const body = (await res.json()) as { errors: Array<{ code: string; message: string; detail: unknown }> };
  assert.equal(body.errors.length, 1);
  assert.equal(typeof body.errors[0]!.message, 'string');
  assert.ok('detail' in body.errors[0]!);
  return body.errors[0]!.code;
};

test('end-1: GET /v2/ answers 200 with Docker-Distribution-API-Version: registry/2.0', async () => {
  const res = await get('/v2/');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
});

test('end-3: a GET of an existing manifest MUST provide it with 200; Docker-Content-Digest matches the body; Content-Type is its type without parameters', async () => {
  for (const reference of ['alpha', image.manifestDigest]) {
    const res = await get(`/v2/spec/manifests/${reference}`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(res.status, 200, reference);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(res.headers.get('docker-content-digest'), sha256(body), reference);
    assert.equal(sha256(body), image.manifestDigest, 'byte-exact with the upstream');
    assert.equal(res.headers.get('content-type'), OCI_MANIFEST);
    assert.equal(JSON.parse(body.toString()).mediaType, OCI_MANIFEST, "the manifest's mediaType matches Content-Type");
  }
});

test('end-3: a manifest not found in the repository MUST be 404 (GET and HEAD), MANIFEST_UNKNOWN', async () => {
  const res = await get('/v2/spec/manifests/never-pushed');
  assert.equal(res.status, 404);
  assert.equal(await ociError(res), 'MANIFEST_UNKNOWN');
  assert.equal((await get('/v2/spec/manifests/never-pushed', { method: 'HEAD' })).status, 404);
  const unknownDigest = await get(`/v2/spec/manifests/sha256:${'0'.repeat(64)}`);
  assert.equal(unknownDigest.status, 404);
  assert.equal(await ociError(unknownDigest), 'MANIFEST_UNKNOWN');
});

test('end-3: a reference is a tag (at most 128 characters of [a-zA-Z0-9_][a-zA-Z0-9._-]*) or a digest; anything else names no manifest: 404 MANIFEST_UNKNOWN', async () => {
  for (const reference of ['-leading-dash', `t${'x'.repeat(128)}`, 'sha256:123', `md5:${'0'.repeat(32)}`, 'has%20space']) {
    for (const method of ['GET', 'HEAD']) {
      const res = await get(`/v2/spec/manifests/${reference}`, { method });
      assert.equal(res.status, 404, `${method} ${reference}`);
      if (method === 'GET') assert.equal(await ociError(res), 'MANIFEST_UNKNOWN', reference);
    }
  }
  assert.equal((await get(`/v2/spec/manifests/${'t'.repeat(128)}`)).status, 404, 'a valid 128-character tag that does not exist is also 404');
});

test('HEAD of an existing manifest MUST return 200, SHOULD carry Docker-Content-Digest and Content-Length, and has no body', async () => {
  const res = await get('/v2/spec/manifests/alpha', { method: 'HEAD', headers: { accept: OCI_MANIFEST } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-content-digest'), image.manifestDigest);
  const full = Buffer.from(await (await get('/v2/spec/manifests/alpha', { headers: { accept: OCI_MANIFEST } })).arrayBuffer());
  assert.equal(res.headers.get('content-length'), String(full.length));
  assert.equal((await res.arrayBuffer()).byteLength, 0);
});

test('end-2: a GET of an existing blob MUST provide it with 200; Docker-Content-Digest, if present, MUST match the body', async () => {
  const digest = image.layers[0]!.digest;
  const res = await get(`/v2/spec/blobs/${digest}`);
  assert.equal(res.status, 200);
  const body = Buffer.from(await res.arrayBuffer());
  assert.equal(sha256(body), digest);
  const header = res.headers.get('docker-content-digest');
  if (header !== null) assert.equal(header, digest);
});

test('end-2: HEAD of an existing blob MUST return 200 with Docker-Content-Digest and Content-Length', async () => {
  const { digest, size } = image.layers[0]!;
  const res = await get(`/v2/spec/blobs/${digest}`, { method: 'HEAD' });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-content-digest'), digest);
  assert.equal(res.headers.get('content-length'), String(size));
});

test('end-2: a blob not found MUST be 404 (GET and HEAD), BLOB_UNKNOWN', async () => {
  const missing = `sha256:${'1'.repeat(64)}`;
  const res = await get(`/v2/spec/blobs/${missing}`);
  assert.equal(res.status, 404);
  assert.equal(await ociError(res), 'BLOB_UNKNOWN');
  assert.equal((await get(`/v2/spec/blobs/${missing}`, { method: 'HEAD' })).status, 404);
});

test('end-2: a registry SHOULD support Range on blobs (RFC 9110): 206 with Content-Range, 416 when unsatisfiable; while streaming from the upstream and once stored', async () => {
  const bytes = randomBytes(200_000);
  const cold = await pushImage(registry, 'library/ranges', '1', [{ 'r.bin': bytes }]);
  const { digest, size } = cold.layers[0]!;
  const { db, close } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`);
  try {
    const check = async (when: string) => {
      const res = await get(`/v2/ranges/blobs/${digest}`, { headers: { range: 'bytes=100-199' } });
      assert.equal(res.status, 206, when);
      assert.equal(res.headers.get('content-range'), `bytes 100-199/${size}`, when);
      const part = Buffer.from(await res.arrayBuffer());
      assert.equal(part.length, 100, when);
      const beyond = await get(`/v2/ranges/blobs/${digest}`, { headers: { range: `bytes=${size}-` } });
      assert.equal(beyond.status, 416, when);
      assert.equal(await ociError(beyond), 'RANGE_INVALID', when);
      return part;
    };
    // No manifest was asked for: the blob is not stored, the first request goes upstream.
    assert.equal((await db.select().from(blobs).where(eq(blobs.digest, digest))).length, 0);
    const fromUpstream = await check('from the upstream');
    const full = Buffer.from(await (await get(`/v2/ranges/blobs/${digest}`)).arrayBuffer());
    assert.deepEqual(fromUpstream, full.subarray(100, 200));
    await until(async () => (await db.select().from(blobs).where(eq(blobs.digest, digest)))[0]?.state === 'ready', 30_000, 'the blob to be stored');
    assert.deepEqual(await check('from the store'), full.subarray(100, 200));
    const suffix = await get(`/v2/ranges/blobs/${digest}`, { headers: { range: 'bytes=-10' } });
    assert.equal(suffix.status, 206);
    assert.deepEqual(Buffer.from(await suffix.arrayBuffer()), full.subarray(size - 10));
    const whole = await get(`/v2/ranges/blobs/${digest}`);
    assert.equal(whole.headers.get('content-length'), String(size));
    assert.equal(whole.headers.get('docker-content-digest'), digest);
    assert.deepEqual(Buffer.from(await whole.arrayBuffer()), full, 'the whole blob from the store, as from the upstream');
    // From the store the Node server sends the file itself, not a Response body: the access
    // log still says 206 for both ranges served from it, besides the one from the upstream.
    const path = `/v2/ranges/blobs/${digest}`;
    const partial = () => server.output().split('\n').filter((l) => l.includes(`"path":"${path}"`) && l.includes('"status":206')).length;
    await until(async () => partial() >= 3, 10_000, 'the access log lines of three 206s');
    assert.equal(partial(), 3);
  } finally {
    close();
  }
});

test('end-8a: tags/list MUST answer 200 with {name, tags}, the tags in lexical order (case-insensitive)', async () => {
  const res = await get('/v2/spec/tags/list');
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { name: 'spec', tags: LEXICAL });
});

test('end-8b: with n the response MUST hold n tags unless fewer remain or a Link rel="next" is given; n=0 MUST be an empty list without Link', async () => {
  const page = await get('/v2/spec/tags/list?n=2');
  assert.deepEqual(await page.json(), { name: 'spec', tags: LEXICAL.slice(0, 2) });
  const link = page.headers.get('link');
  assert.match(link ?? '', /^<\/v2\/spec\/tags\/list\?[^>]*>; rel="next"$/);
  const next = await get(/<([^>]+)>/.exec(link!)![1]!);
  assert.deepEqual(((await next.json()) as { tags: string[] }).tags, LEXICAL.slice(2, 4));
  const zero = await get('/v2/spec/tags/list?n=0');
  assert.deepEqual(await zero.json(), { name: 'spec', tags: [] });
  assert.equal(zero.headers.get('link'), null);
  const all = await get('/v2/spec/tags/list?n=10');
  assert.deepEqual(((await all.json()) as { tags: string[] }).tags, LEXICAL);
  assert.equal(all.headers.get('link'), null);
});

test('end-8b: last returns the tags after it, in lexical order; n is OPTIONAL with last', async () => {
  assert.deepEqual(((await (await get('/v2/spec/tags/list?last=alpha')).json()) as { tags: string[] }).tags, ['Beta', 'gamma']);
  assert.deepEqual(((await (await get('/v2/spec/tags/list?last=alpha&n=1')).json()) as { tags: string[] }).tags, ['Beta']);
  assert.deepEqual(((await (await get('/v2/spec/tags/list?last=gamma')).json()) as { tags: string[] }).tags, []);
});

test('end-8a: tags/list of a repository that does not exist is 404 NAME_UNKNOWN; a bad n is 400 PAGINATION_NUMBER_INVALID', async () => {
  const res = await get('/v2/never/pushed/tags/list');
  assert.equal(res.status, 404);
  assert.equal(await ociError(res), 'NAME_UNKNOWN');
  const bad = await get('/v2/spec/tags/list?n=-1');
  assert.equal(bad.status, 400);
  assert.equal(await ociError(bad), 'PAGINATION_NUMBER_INVALID');
});

test('end-12a: a referrers request with an invalid digest MUST be 400; an upstream without the API is 404, which tells clients to use the tag schema', async () => {
  const bad = await get('/v2/spec/referrers/sha256:nothex');
  assert.equal(bad.status, 400);
  assert.equal(await ociError(bad), 'DIGEST_INVALID');
  const res = await get(`/v2/spec/referrers/${image.manifestDigest}`);
  assert.equal(res.status, 404, "Debian's registry (distribution 2.8) has no referrers API");
  const fallback = await get(`/v2/spec/manifests/${image.manifestDigest.replace(':', '-')}`);
  assert.equal(fallback.status, 404, 'the referrers tag schema resolves through the manifest route');
});

test('errors: every 4xx body is the OCI envelope {"errors":[{code,message,detail}]} with the spec status for its code', async () => {
  const cases: Array<[string, number, string]> = [
    ['/v2/UPPER/manifests/1', 400, 'NAME_INVALID'],
    ['/v2/spec/blobs/sha256:zz', 400, 'DIGEST_INVALID'],
    ['/v2/spec/manifests/never-pushed', 404, 'MANIFEST_UNKNOWN'],
    [`/v2/spec/blobs/sha256:${'2'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
    ['/v2/spec/manifests/1?ns=not.configured', 403, 'DENIED'],
  ];
  for (const [path, status, code] of cases) {
    const res = await get(path);
    assert.equal(res.status, status, path);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/, path);
    assert.equal(await ociError(res), code, path);
  }
});
