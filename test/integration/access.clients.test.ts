// Real clients log in to a mirror with access control and pull through it: skopeo (login,
// --creds, and an auth file in docker's config.json format, which is what Kubernetes
// imagePullSecrets hold), podman (login, --creds) and containerd's ctr (--user, and a
// hosts.toml Authorization header with a CI token), and `pullthrough rootfs`. Each is
// refused without the right credentials, and the server's log never shows a secret.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, runServerToExit, type Server } from '../setup/server.ts';
import { podmanWithMirror, containerdWithMirror } from '../setup/clients.ts';
import { pullthroughRootfs } from '../setup/rootfs.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { newStaticToken } from '../../core/auth/access.ts';
import { digestOf } from '../../core/oci/digest.ts';

const run = promisify(execFile);
let registry: Registry;
let server: Server;
let dir: string;
let small: BuiltImage;
let app: BuiltImage;
const alicePassword = `alice-${randomBytes(8).toString('hex')}`;
let ci: { token: string; hash: string };
const secrets: string[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-access-clients-'));
  registry = await startRegistry();
  small = await pushImage(registry, 'library/small', '1', [{ 'etc/small': 'small\n' }]);
  app = await pushImage(registry, 'acme/app', '1', [{ 'app/bin': 'acme app\n' }], { format: 'v2s2' });
  ci = await newStaticToken();
  const aliceHash = await hashPassword(alicePassword);
  const key = randomBytes(32).toString('base64url');
  secrets.push(alicePassword, aliceHash, ci.token, ci.hash, key);
  server = await startServer({
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }),
    AUTH_USERS: JSON.stringify({ alice: aliceHash }),
    AUTH_TOKENS: JSON.stringify({ ci: ci.hash }),
    AUTH_TOKEN_KEYS: `k1:${key}`,
    AUTH_RULES: 'pull docker.io/library/* to alice, ci; pull docker.io/acme/** to ci',
  });
});
after(async () => {
  // What the server logged over every test: no password, hash, token or key, ever.
  const output = server?.output() ?? '';
  if (process.env.PT_TEST_LOG) console.error(output);
  await server?.stop();
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
  for (const secret of secrets) assert.ok(!output.includes(secret), 'a secret reached the server log');
  assert.ok(output.includes('"msg":"login failed"'), 'the refused logins were logged');
});

const withStdin = (command: string, args: string[], input: string) =>
  new Promise<void>((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdout.resume();
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args[0]} exited ${code}: ${err}`))));
    child.stdin.end(input);
  });

const skopeoCopy = async (image: string, dest: string, auth: string[]) => {
  await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', ...auth, `docker://${server.host}/${image}`, `dir:${join(dir, dest)}`]);
  return digestOf(await readFile(join(dir, dest, 'manifest.json')));
};

test('skopeo: login then pull, --src-creds with a CI token, and a docker config.json (imagePullSecrets) auth file; refused without', async () => {
  const authfile = join(dir, 'skopeo-auth.json');
  await assert.rejects(withStdin('skopeo', ['login', '--tls-verify=false', '--authfile', authfile, '--username', 'alice', '--password-stdin', server.host], 'wrong-password'), /invalid username\/password|unauthorized/i);
  await withStdin('skopeo', ['login', '--tls-verify=false', '--authfile', authfile, '--username', 'alice', '--password-stdin', server.host], alicePassword);
  assert.equal(await skopeoCopy('library/small:1', 'skopeo-login', ['--authfile', authfile]), small.manifestDigest);
  await assert.rejects(skopeoCopy('acme/app:1', 'skopeo-alice-acme', ['--authfile', authfile]), /denied|unauthorized/i, 'alice may not pull acme');
  assert.equal(await skopeoCopy('acme/app:1', 'skopeo-creds', ['--src-creds', `ci:${ci.token}`]), app.manifestDigest);
  // Kubernetes' imagePullSecrets (.dockerconfigjson) are this file, as docker login writes it.
  const dockerConfig = join(dir, 'config.json');
  await writeFile(dockerConfig, JSON.stringify({ auths: { [server.host]: { auth: Buffer.from(`ci:${ci.token}`).toString('base64') } } }));
  assert.equal(await skopeoCopy('acme/app:1', 'skopeo-dockerconfig', ['--authfile', dockerConfig]), app.manifestDigest);
  await assert.rejects(skopeoCopy('library/small:1', 'skopeo-anonymous', ['--src-no-creds']), /unauthorized|authentication required/i, 'anonymous may pull nothing');
});

test('podman: login then pull through the mirror, and --creds; a wrong password is refused', async () => {
  const podman = await podmanWithMirror(server.host);
  try {
    // --creds goes to the registry named in the reference (podman does not send it to mirrors).
    const direct = (creds: string) => podman.pull('acme/app:1', ['--tls-verify=false', '--creds', creds], server.host);
    await assert.rejects(direct('ci:pt_not-the-token'), /invalid username\/password|unauthorized/i);
    assert.equal(await direct(`ci:${ci.token}`), app.manifestDigest);
    await assert.rejects(podman.pull('library/small:1'), /unauthorized|authentication required/i, 'anonymous through the mirror');
    await assert.rejects(podman.login('alice', 'wrong-password'), /invalid username\/password|unauthorized/i);
    await podman.login('alice', alicePassword);
    assert.equal(await podman.pull('library/small:1'), small.manifestDigest);
  } finally {
    await podman.remove();
  }
});

test('ctr: --user, and a hosts.toml Authorization header carrying a CI token; a wrong password is refused', async () => {
  const plain = await containerdWithMirror(server.host);
  try {
    await assert.rejects(plain.pull('library/small:1', false, ['--user', 'alice:wrong-password']), /unauthorized|401|incorrect/i);
    await assert.rejects(plain.pull('library/small:1'), /unauthorized|401|authorization/i, 'anonymous may pull nothing');
    assert.equal(await plain.pull('library/small:1', false, ['--user', `alice:${alicePassword}`]), small.manifestDigest);
  } finally {
    await plain.stop();
  }
  const headed = await containerdWithMirror(server.host, { authorization: `Bearer ${ci.token}` });
  try {
    assert.equal(await headed.pull('acme/app:1'), app.manifestDigest);
  } finally {
    await headed.stop();
  }
});

test('pullthrough rootfs on a mirror with access control: credentials from the environment for the plan; its layer URLs carry a token for that repository only', async () => {
  const anonymous = await pullthroughRootfs(['library/small:1', join(dir, 'root-anonymous'), '--server', server.url]);
  assert.equal(anonymous.code, 1);
  assert.match(anonymous.stderr, /refused the plan \(401\).*UNAUTHORIZED/);
  const built = await pullthroughRootfs(['library/small:1', join(dir, 'root'), '--server', server.url], { env: { PULLTHROUGH_USER: 'alice', PULLTHROUGH_PASSWORD: alicePassword } });
  assert.equal(built.code, 0, built.stderr);
  assert.equal(await readFile(join(dir, 'root', 'etc', 'small'), 'utf8'), 'small\n');
  const viaToken = await pullthroughRootfs(['acme/app:1', join(dir, 'root-ci'), '--server', server.url], { env: { PULLTHROUGH_TOKEN: ci.token } });
  assert.equal(viaToken.code, 0, viaToken.stderr);
  assert.equal(await readFile(join(dir, 'root-ci', 'app', 'bin'), 'utf8'), 'acme app\n');

  const planRes = await fetch(`${server.url}/api/rootfs/library/small:1`, { headers: { authorization: `Basic ${Buffer.from(`alice:${alicePassword}`).toString('base64')}` } });
  assert.equal(planRes.status, 200);
  const plan = (await planRes.json()) as { access_token: string; urls_expire_at: string; layers: Array<{ diff_id: string; tar_url: string; toc_url: string; files_url: string }> };
  secrets.push(plan.access_token);
  const [layer] = plan.layers;
  assert.equal(layer!.tar_url, `${server.url}/api/layers/docker.io/library/small/${layer!.diff_id}/tar?access_token=${plan.access_token}`);
  assert.ok(Date.parse(plan.urls_expire_at) > Date.now(), 'the token expiry is in the plan');
  assert.equal((await fetch(layer!.tar_url)).status, 200);
  const file = await fetch(`${layer!.files_url}etc/small?access_token=${plan.access_token}`);
  assert.equal(await file.text(), 'small\n');
  const bare = layer!.tar_url.replace(/\?.*$/, '');
  assert.equal((await fetch(bare)).status, 401, 'a layer URL without its token');
  const elsewhere = await fetch(`${bare.replace('/docker.io/library/small/', '/docker.io/acme/app/')}?access_token=${plan.access_token}`);
  assert.equal(elsewhere.status, 401, "the plan's token does not open another repository");
  assert.match(elsewhere.headers.get('www-authenticate')!, /insufficient_scope/);
});

test('the server refuses to start on bad access configuration, naming the variable and quoting no secret', async () => {
  for (const [env, pattern] of [
    [{ AUTH_RULES: 'pull docker.io/** to mallory' }, /AUTH_RULES: rule 1 .*"mallory" is not a user/],
    [{ AUTH_USERS: '{"alice":"plain-secret-password"}' }, /AUTH_USERS: alice: not a password hash/],
    [{ AUTH_TOKEN_KEYS: 'k1:dG9vLXNob3J0' }, /AUTH_TOKEN_KEYS: key k1: the secret must be at least 32 bytes/],
  ] as const) {
    const exited = await runServerToExit({ DATA_DIR: join(dir, 'refused'), ...env });
    assert.equal(exited.code, 2, JSON.stringify(env));
    assert.match(exited.stderr, pattern);
    assert.ok(!exited.stderr.includes('plain-secret-password') && !exited.stderr.includes('dG9vLXNob3J0'), 'no secret in the message');
  }
});
