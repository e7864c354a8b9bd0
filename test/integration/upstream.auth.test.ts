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
  const good = await createTestApp({ url: registry.url, username: tokens.username, password: tokens.password });
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
  const bad = await createTestApp({ url: registry.url, username: tokens.username, password: wrongPassword });
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

test('the server with upstream credentials: skopeo pulls the private image; no password or token reaches the logs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pt-auth-'));
  const server = await startServer({
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url, username: tokens.username, password: tokens.password } }),
  });
  try {
    const issuedBefore = tokens.issued.length;
    await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${server.host}/private:1`, `dir:${join(dir, 'pulled')}`]);
    assert.equal(digestOf(await readFile(join(dir, 'pulled', 'manifest.json'))), privateImage.manifestDigest);
    const issued = tokens.issued.slice(issuedBefore);
    assert.ok(issued.length > 0, 'the server fetched tokens');
    const output = server.output();
    assert.ok(!output.includes(tokens.password), 'no password in the logs');
    for (const token of issued) assert.ok(!output.includes(token), 'no token in the logs');
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
