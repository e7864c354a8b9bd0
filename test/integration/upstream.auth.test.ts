// The upstream client against a registry with real token authentication (Docker Hub's
// scheme: a Bearer challenge, a token service taking Basic credentials) whose blobs live
// in Ceph RGW, so blob GETs redirect to presigned storage URLs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { digestOf } from '../../core/oci/digest.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { randomBytes } from 'node:crypto';
import { UpstreamRegistry } from '../../core/adapters/http-upstream.ts';
import { MANIFEST_MEDIA_TYPES } from '../../core/oci/manifest.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startTokenServer, type TokenServer } from '../setup/token-server.ts';
import { s3TestBucket } from '../setup/s3.ts';
import { createTestApp } from '../setup/app.ts';
import { startServer } from '../setup/server.ts';

const run = promisify(execFile);
let tokens: TokenServer;
let registry: Registry;
let publicImage: BuiltImage;
let privateImage: BuiltImage;
let withS3 = false;

before(async () => {
  tokens = await startTokenServer();
  const s3 = await s3TestBucket('auth');
  withS3 = s3 !== undefined;
  registry = await startRegistry({
    token: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.certFile },
    s3: s3 && { endpoint: process.env.S3_TEST_ENDPOINT!, bucket: s3.bucket, accessKeyId: process.env.S3_TEST_ACCESS_KEY_ID!, secretAccessKey: process.env.S3_TEST_SECRET_ACCESS_KEY! },
  });
  const creds = `${tokens.username}:${tokens.password}`;
  publicImage = await pushImage(registry, 'library/public', '1', [{ 'etc/public': 'anyone\n' }], { creds });
  privateImage = await pushImage(registry, 'library/private', '1', [{ 'etc/private': 'members only\n' }], { creds });
});
after(async () => {
  await registry?.stop();
  await tokens?.stop();
});

const accept = { accept: MANIFEST_MEDIA_TYPES.join(', ') };
const errorCode = async (res: Response) => ((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code;

test('anonymous: one token per scope, cached; the blob follows the storage redirect without Authorization', async () => {
  const upstream = new UpstreamRegistry('docker.io', { url: registry.url }, { attempts: 1 });
  const before = tokens.requests();
  const manifest = await upstream.request('GET', '/v2/library/public/manifests/1', 'library/public', accept);
  assert.equal(manifest.status, 200);
  assert.equal(digestOf(new Uint8Array(await manifest.arrayBuffer())), publicImage.manifestDigest);
  const layer = publicImage.layers[0]!;
  const blob = await upstream.request('GET', `/v2/library/public/blobs/${layer.digest}`, 'library/public');
  assert.equal(blob.status, 200);
  assert.equal(digestOf(new Uint8Array(await blob.arrayBuffer())), layer.digest);
  assert.equal(tokens.requests() - before, 1, 'one token for manifest and blob');

  if (withS3) {
    // The registry redirects to RGW, which refuses a request that carries our Bearer token:
    // the pull above only worked because the client dropped it on the way.
    const token = tokens.issued.at(-1)!;
    const redirect = await fetch(`${registry.url}/v2/library/public/blobs/${layer.digest}`, { redirect: 'manual', headers: { authorization: `Bearer ${token}` } });
    assert.equal(redirect.status, 307);
    const location = redirect.headers.get('location')!;
    assert.ok(location.startsWith(process.env.S3_TEST_ENDPOINT!), location);
    assert.equal((await fetch(location, { headers: { authorization: `Bearer ${token}` } })).status, 400);
  }
});

test('anonymous: a private repository is UNAUTHORIZED through the mirror', async () => {
  const t = await createTestApp(registry.url);
  try {
    const res = await t.app.request('/v2/private/manifests/1');
    assert.equal(res.status, 401);
    assert.equal(await errorCode(res), 'UNAUTHORIZED');
  } finally {
    await t.close();
  }
});

test('Basic credentials to the token service pull the private repository; a wrong password is UNAUTHORIZED and never echoed', async () => {
  // An upstream with credentials is never readable anonymously by default: a rule must say so.
  const closed = await createTestApp({ url: registry.url, username: tokens.username, password: tokens.password });
  try {
    const before = tokens.requests();
    const res = await closed.app.request('/v2/private/manifests/1');
    assert.equal(res.status, 401);
    assert.equal(await errorCode(res), 'UNAUTHORIZED');
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm="http:\/\/localhost\/token",service="pullthrough",scope="repository:docker.io\/library\/private:pull"$/);
    assert.equal(tokens.requests(), before, 'the upstream was not contacted');
  } finally {
    await closed.close();
  }
  const good = await createTestApp({ url: registry.url, username: tokens.username, password: tokens.password }, 60, undefined, { env: { AUTH_RULES: 'pull docker.io/** to anonymous' } });
  try {
    const manifest = await good.app.request('/v2/private/manifests/1');
    assert.equal(manifest.status, 200);
    assert.equal(manifest.headers.get('docker-content-digest'), privateImage.manifestDigest);
    const layer = privateImage.layers[0]!;
    const blob = await good.app.request(`/v2/private/blobs/${layer.digest}`);
    assert.equal(blob.status, 200);
    assert.equal(digestOf(new Uint8Array(await blob.arrayBuffer())), layer.digest);
  } finally {
    await good.close();
  }
  const wrongPassword = 'not-the-password-1234';
  const bad = await createTestApp({ url: registry.url, username: tokens.username, password: wrongPassword }, 60, undefined, { env: { AUTH_RULES: 'pull docker.io/** to anonymous' } });
  try {
    const res = await bad.app.request('/v2/private/manifests/1');
    assert.equal(res.status, 401);
    const text = await res.text();
    assert.equal(JSON.parse(text).errors[0].code, 'UNAUTHORIZED');
    assert.ok(!text.includes(wrongPassword) && !text.includes(tokens.username), text);
  } finally {
    await bad.close();
  }
});

test('the server with upstream credentials: only the user the rules allow pulls the private image (skopeo); no secret reaches the logs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pt-auth-'));
  const users = { alice: 'alice-secret-pass-1', bob: 'bob-secret-pass-2' };
  const hashes: Record<string, string> = Object.fromEntries(await Promise.all(Object.entries(users).map(async ([u, p]) => [u, await hashPassword(p)])));
  const key = Buffer.from(randomBytes(32)).toString('base64url');
  const server = await startServer({
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url, username: tokens.username, password: tokens.password } }),
    AUTH_USERS: JSON.stringify(hashes),
    AUTH_TOKEN_KEYS: `k1:${key}`,
    AUTH_RULES: 'pull docker.io/library/private to alice; pull docker.io/library/public to anonymous, authenticated',
  });
  const skopeo = (image: string, dest: string, creds?: string) =>
    run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', ...(creds ? ['--src-creds', creds] : ['--src-no-creds']), `docker://${server.host}/${image}`, `dir:${join(dir, dest)}`]);
  try {
    const issuedBefore = tokens.issued.length;
    await assert.rejects(skopeo('private:1', 'anon'), /unauthorized|authentication required/i, 'anonymous is refused');
    await assert.rejects(skopeo('private:1', 'bob', `bob:${users.bob}`), /denied|unauthorized|authentication required/i, 'bob has no rule for it');
    await assert.rejects(skopeo('private:1', 'wrong', `alice:${users.bob}`), /unauthorized|incorrect username or password/i, 'a wrong password');
    assert.equal(tokens.issued.length, issuedBefore, 'no refused pull made the mirror contact the upstream');
    await skopeo('private:1', 'alice', `alice:${users.alice}`);
    assert.equal(digestOf(await readFile(join(dir, 'alice', 'manifest.json'))), privateImage.manifestDigest);
    await skopeo('public:1', 'public');
    assert.equal(digestOf(await readFile(join(dir, 'public', 'manifest.json'))), publicImage.manifestDigest);
    const issued = tokens.issued.slice(issuedBefore);
    assert.ok(issued.length > 0, 'the server fetched upstream tokens');
    const output = server.output();
    for (const secret of [tokens.password, users.alice, users.bob, key, ...Object.values(hashes), ...issued]) assert.ok(!output.includes(secret), 'no password, hash, key or token in the logs');
    assert.match(output, /"msg":"login failed","user":"alice","address":"127\.0\.0\.1"/, 'the failed login is logged by user and address');
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
