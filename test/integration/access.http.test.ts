// Access control over HTTP, in-process on real parts (a libSQL file, the filesystem store)
// against a real upstream registry: the token flow, rules, repository-scoped content,
// the admin grant and the cold-work limit. Real clients are in access.clients.test.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createTestApp, type TestApp } from '../setup/app.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { basic } from '../setup/server.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { newStaticToken } from '../../core/auth/access.ts';
import { MANIFEST_MEDIA_TYPES } from '../../core/oci/manifest.ts';

let registry: Registry;
let small: BuiltImage;
let app: BuiltImage;
let twin: BuiltImage;
const passwords = { alice: 'alice-pass-0123', bob: 'bob-pass-4567' };
let ci: { token: string; hash: string };
let env: Record<string, string>;
let t: TestApp;

before(async () => {
  registry = await startRegistry();
  small = await pushImage(registry, 'library/small', '1', [{ 'etc/small': 'small\n' }]);
  app = await pushImage(registry, 'acme/app', '1', [{ 'app/bin': 'acme app\n' }]);
  // The same layer as library/small, pushed to another repository on its own.
  twin = await pushImage(registry, 'library/twin', '1', [{ 'etc/small': 'small\n' }]);
  ci = await newStaticToken();
  env = {
    AUTH_USERS: JSON.stringify({ alice: await hashPassword(passwords.alice), bob: await hashPassword(passwords.bob) }),
    AUTH_TOKENS: JSON.stringify({ ci: ci.hash }),
    AUTH_TOKEN_KEYS: `k1:${randomBytes(32).toString('base64url')}`,
    AUTH_RULES: 'pull docker.io/library/* to alice, ci; pull docker.io/acme/** to ci; admin to alice',
  };
  t = await createTestApp(registry.url, 60, undefined, { env });
});
after(async () => {
  await t?.close();
  await registry?.stop();
});

const accept = { accept: MANIFEST_MEDIA_TYPES.join(', ') };
const errors = async (res: Response) => ((await res.json()) as { errors: Array<{ code: string; message: string; detail: unknown }> }).errors;
const tokenFor = async (scope: string, headers: Record<string, string> = {}) => {
  const res = await t.app.request(`/token?service=pullthrough&scope=${encodeURIComponent(scope)}`, { headers });
  assert.equal(res.status, 200);
  const body = (await res.json()) as { token: string; access_token: string; expires_in: number; issued_at: string };
  assert.equal(body.token, body.access_token);
  assert.equal(body.expires_in, 900);
  return body.token;
};

test('GET /v2/ challenges anonymous callers to the token endpoint, and answers 200 with credentials', async () => {
  const res = await t.app.request('/v2/');
  assert.equal(res.status, 401);
  assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="http://localhost/token",service="pullthrough"');
  assert.deepEqual(await errors(res), [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }]);
  assert.equal((await t.app.request('/v2/', { headers: basic('alice', passwords.alice) })).status, 200);
  assert.equal((await t.app.request('/v2/', { headers: { authorization: `Bearer ${ci.token}` } })).status, 200);
  assert.equal((await t.app.request('/v2/', { headers: { authorization: `Bearer ${await tokenFor('repository:library/small:pull', basic('alice', passwords.alice))}` } })).status, 200);
  assert.equal((await t.app.request('/v2/', { headers: { authorization: `Bearer ${await tokenFor('repository:library/small:pull')}` } })).status, 200, 'an anonymous token is a token');
});

test('the token flow: a token for what the rules allow, used on /v2/; Basic on /v2/ works too', async () => {
  const token = await tokenFor('repository:library/small:pull', basic('alice', passwords.alice));
  const manifest = await t.app.request('/v2/library/small/manifests/1', { headers: { ...accept, authorization: `Bearer ${token}` } });
  assert.equal(manifest.status, 200);
  assert.equal(manifest.headers.get('docker-content-digest'), small.manifestDigest);
  const blob = await t.app.request(`/v2/library/small/blobs/${small.layers[0]!.digest}`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(blob.status, 200);
  await blob.arrayBuffer();
  const direct = await t.app.request('/v2/library/small/manifests/1', { headers: { ...accept, ...basic('alice', passwords.alice) } });
  assert.equal(direct.status, 200);
  // The OAuth2 form containerd tries first.
  const form = new URLSearchParams({ grant_type: 'password', username: 'alice', password: passwords.alice, service: 'pullthrough', scope: 'repository:library/small:pull', client_id: 'containerd' });
  const posted = await t.app.request('/token', { method: 'POST', body: form.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(form.toString().length) } });
  assert.equal(posted.status, 200);
  const { access_token } = (await posted.json()) as { access_token: string };
  assert.equal((await t.app.request('/v2/library/small/manifests/1', { headers: { ...accept, authorization: `Bearer ${access_token}` } })).status, 200);
});

test('refusals: wrong password, expired token, token for another repository, anonymous, a user without a rule', async () => {
  const wrong = await t.app.request('/token?service=pullthrough&scope=repository:library/small:pull', { headers: basic('alice', 'not-her-password') });
  assert.equal(wrong.status, 401);
  const wrongText = await wrong.text();
  assert.deepEqual(JSON.parse(wrongText).errors, [{ code: 'UNAUTHORIZED', message: 'incorrect username or password', detail: null }]);
  assert.ok(!wrongText.includes('not-her-password'));
  const unknownUser = await t.app.request('/v2/library/small/manifests/1', { headers: basic('mallory', 'x') });
  assert.equal(unknownUser.status, 401);
  assert.equal((await errors(unknownUser))[0]!.message, 'incorrect username or password', 'an unknown user reads like a wrong password');

  // A token for library/small does not open acme/app: 401 with insufficient_scope sends the client back to /token.
  const token = await tokenFor('repository:library/small:pull', basic('alice', passwords.alice));
  const other = await t.app.request('/v2/acme/app/manifests/1', { headers: { ...accept, authorization: `Bearer ${token}` } });
  assert.equal(other.status, 401);
  assert.equal(other.headers.get('www-authenticate'), 'Bearer realm="http://localhost/token",service="pullthrough",scope="repository:docker.io/acme/app:pull",error="insufficient_scope"');
  assert.deepEqual(await errors(other), [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: { name: 'docker.io/acme/app' } }]);
  // Asked for anyway, the token leaves out what alice may not pull.
  const partial = await tokenFor('repository:acme/app:pull repository:library/small:pull', basic('alice', passwords.alice));
  const claims = JSON.parse(Buffer.from(partial.split('.')[1]!, 'base64url').toString()) as { access: unknown; sub: string };
  assert.deepEqual(claims.access, [{ type: 'repository', name: 'docker.io/library/small', actions: ['pull'] }]);
  assert.equal(claims.sub, 'user:alice');

  // Anonymous may pull nothing here.
  const anonymous = await t.app.request('/v2/library/small/manifests/1', { headers: accept });
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.headers.get('www-authenticate'), 'Bearer realm="http://localhost/token",service="pullthrough",scope="repository:docker.io/library/small:pull"');
  const anonymousToken = await tokenFor('repository:library/small:pull');
  assert.equal((await t.app.request('/v2/library/small/manifests/1', { headers: { ...accept, authorization: `Bearer ${anonymousToken}` } })).status, 401);

  // bob exists but no rule names him: 403 DENIED, the same for a repository that exists and one that does not.
  for (const name of ['library/small', 'library/does-not-exist']) {
    const denied = await t.app.request(`/v2/${name}/manifests/1`, { headers: { ...accept, ...basic('bob', passwords.bob) } });
    assert.equal(denied.status, 403);
    assert.deepEqual(await errors(denied), [{ code: 'DENIED', message: 'requested access to the resource is denied', detail: { name: `docker.io/${name}` } }]);
  }
  // The CI token may pull acme, as the password of its name or as a bearer value; a made-up one may not.
  assert.equal((await t.app.request('/v2/acme/app/manifests/1', { headers: { ...accept, authorization: `Bearer ${ci.token}` } })).status, 200);
  assert.equal((await t.app.request('/v2/acme/app/manifests/1', { headers: { ...accept, ...basic('ci', ci.token) } })).status, 200);
  assert.equal((await t.app.request('/v2/acme/app/manifests/1', { headers: { ...accept, ...basic('alice', ci.token) } })).status, 401, 'a token under another name');
  const forged = await t.app.request('/v2/acme/app/manifests/1', { headers: { ...accept, authorization: `Bearer pt_${'A'.repeat(43)}` } });
  assert.equal(forged.status, 401);
  const garbage = await t.app.request('/v2/acme/app/manifests/1', { headers: { ...accept, authorization: 'Bearer not.a.token' } });
  assert.equal(garbage.status, 401);
  assert.match(garbage.headers.get('www-authenticate')!, /error="invalid_token"$/);

  // Expired: the token of a minute ago no longer works once its 900 s have passed.
  const soon = await tokenFor('repository:library/small:pull', basic('alice', passwords.alice));
  t.advance(901_000);
  const expired = await t.app.request('/v2/library/small/manifests/1', { headers: { ...accept, authorization: `Bearer ${soon}` } });
  assert.equal(expired.status, 401);
  assert.deepEqual(await errors(expired), [{ code: 'UNAUTHORIZED', message: 'the token has expired', detail: null }]);
  assert.match(expired.headers.get('www-authenticate')!, /error="invalid_token"$/);
});

test('a blob or manifest cached through one repository is not served under another that does not reach it', async () => {
  const open = await createTestApp(registry.url);
  try {
    const layer = small.layers[0]!.digest;
    assert.equal((await open.app.request('/v2/library/small/manifests/1', { headers: accept })).status, 200);
    const blob = await open.app.request(`/v2/library/small/blobs/${layer}`);
    assert.equal(blob.status, 200);
    await blob.arrayBuffer();
    // Wait until it is stored, so the probe below is of stored content.
    await waitReady(open, layer);
    for (const method of ['HEAD', 'GET']) {
      const probe = await open.app.request(`/v2/someone/private-thing/blobs/${layer}`, { method });
      assert.equal(probe.status, 404, method);
      if (method === 'GET') assert.deepEqual(await errors(probe), [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry', detail: { digest: layer } }]);
    }
    const manifest = await open.app.request(`/v2/someone/private-thing/manifests/${small.manifestDigest}`, { headers: accept });
    assert.equal(manifest.status, 404);
    assert.equal((await errors(manifest))[0]!.code, 'MANIFEST_UNKNOWN');
    // A repository whose upstream has the same layer gets it, from the store, once the
    // upstream has said so; the answer is remembered (no second question).
    const asked = async () => (await registry.settledRequests()).filter((r) => r.path === `/v2/library/twin/blobs/${layer}`).length;
    const before = await asked();
    const first = await open.app.request(`/v2/library/twin/blobs/${layer}`, { method: 'HEAD' });
    assert.equal(first.status, 200);
    assert.equal(await asked(), before + 1);
    const second = await open.app.request(`/v2/library/twin/blobs/${layer}`);
    assert.equal(second.status, 200);
    await second.arrayBuffer();
    assert.equal(await asked(), before + 1, 'the confirmation is cached');
    assert.equal(twin.layers[0]!.digest, layer);
  } finally {
    await open.close();
  }
});

async function waitReady(app: TestApp, digest: string): Promise<void> {
  const { until } = await import('../setup/process.ts');
  await until(async () => (await app.deps.app.blobs.catalog.blob(digest))?.state === 'ready', 30_000, `${digest} stored`);
}

test('the admin grant (GET /api/access, /metrics): anonymous is asked to authenticate, a user without it is denied, alice sees names and no secret', async () => {
  const anonymous = await t.app.request('/api/access');
  assert.equal(anonymous.status, 401);
  assert.equal((await t.app.request('/api/access', { headers: basic('bob', passwords.bob) })).status, 403);
  assert.equal((await t.app.request('/api/access', { headers: { authorization: `Bearer ${ci.token}` } })).status, 403);
  const res = await t.app.request('/api/access', { headers: basic('alice', passwords.alice) });
  assert.equal(res.status, 200);
  const text = await res.text();
  const body = JSON.parse(text);
  assert.deepEqual(body.users, ['alice', 'bob']);
  assert.deepEqual(body.tokens, ['ci']);
  assert.deepEqual(body.token_keys, ['k1']);
  assert.equal(body.rules.length, 3);
  for (const secret of [ci.token, ci.hash, JSON.parse(env.AUTH_USERS!).alice, env.AUTH_TOKEN_KEYS!.slice(3), 'pbkdf2']) assert.ok(!text.includes(secret));
  // /metrics is an operator endpoint too once access control is on.
  assert.equal((await t.app.request('/metrics')).status, 401);
  assert.equal((await t.app.request('/metrics', { headers: basic('bob', passwords.bob) })).status, 403);
  const metrics = await t.app.request('/metrics', { headers: basic('alice', passwords.alice) });
  assert.equal(metrics.status, 200);
  assert.equal(metrics.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  assert.match(await metrics.text(), /^pullthrough_stored_objects\{kind="blob"\} \d+$/m);
});

test('the cold-work limit: past the rate a caller gets 429 with Retry-After for what needs the upstream, not for what is cached; others are not held', async () => {
  const limited = await createTestApp(registry.url, 60, undefined, { env: { ...env, AUTH_RULES: `${env.AUTH_RULES}; pull docker.io/library/* to anonymous`, COLD_RATE_PER_MINUTE: '2' } });
  try {
    const get = (path: string, headers: Record<string, string> = {}) => limited.app.request(path, { headers: { ...accept, ...headers } });
    assert.equal((await get('/v2/library/small/manifests/1')).status, 200);
    assert.equal((await get(`/v2/library/small/manifests/${small.manifestDigest}`)).status, 200, 'stored: no upstream contact, not counted');
    assert.equal((await get('/v2/library/twin/manifests/1')).status, 200);
    const refused = await get('/v2/library/other/manifests/1');
    assert.equal(refused.status, 429);
    assert.deepEqual(await errors(refused), [{ code: 'TOOMANYREQUESTS', message: 'too many requests for content not in the cache; retry later', detail: { retry_after_seconds: 30 } }]);
    assert.equal(refused.headers.get('retry-after'), '30');
    assert.equal((await get(`/v2/library/small/manifests/${small.manifestDigest}`)).status, 200, 'what is cached is still served');
    assert.equal((await get('/v2/library/other/manifests/1', basic('alice', passwords.alice))).status, 404, 'alice has her own budget (and the repository does not exist)');
    limited.advance(30_000);
    assert.equal((await get('/v2/library/small/manifests/2')).status, 404, 'a minute later the budget is back');
  } finally {
    await limited.close();
  }
});
