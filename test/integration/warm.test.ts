// Warm-up (core/cache/warm.ts, functions/warm.ts, cli/warm.ts) through the real server
// process: `pullthrough warm --wait` as a CI token with a warm grant stores three images
// (one an index, both platforms), a second warm-up moves no byte (counted by a TCP hop in
// front of the registry), the run's events stream to its end, `--extract` prepares layers
// for `pullthrough rootfs`, and with the upstream gone skopeo, podman and ctr pull every
// warmed image with the upstream's digests. Refusals and bad requests get OCI errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, pushIndex, type BuiltImage, type BuiltIndex } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { startFaultyProxy, type FaultyProxy } from '../setup/faulty-proxy.ts';
import { skopeoPull, podmanWithMirror, containerdWithMirror } from '../setup/clients.ts';
import { pullthroughRootfs } from '../setup/rootfs.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { newStaticToken } from '../../core/auth/access.ts';
import { buildCli } from '../../scripts/build.ts';
import type { WireWarmStatus } from '../../functions/wire.ts';

let dir: string;
let registry: Registry;
let proxy: FaultyProxy;
let server: Server;
let ci: { token: string; hash: string };
let base: BuiltImage;
let tool: BuiltImage;
let multi: BuiltIndex;
let extracted: BuiltImage;
let slow: BuiltImage;
const password = 'warm-admin-pass';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-warm-'));
  registry = await startRegistry();
  base = await pushImage(registry, 'library/base', '1', [{ 'etc/os-release': 'ID=base\n' }, { 'usr/lib/base.bin': randomBytes(2_000_000) }]);
  tool = await pushImage(registry, 'library/tool', '2', [{ 'usr/bin/tool': randomBytes(500_000) }], { format: 'v2s2' });
  multi = await pushIndex(registry, 'library/multi', '1', [
    { platform: { os: 'linux', architecture: 'amd64' }, layerFiles: [{ 'etc/arch': 'amd64\n', 'opt/a.bin': randomBytes(300_000) }] },
    { platform: { os: 'linux', architecture: 'arm64' }, layerFiles: [{ 'etc/arch': 'arm64\n', 'opt/b.bin': randomBytes(300_000) }] },
  ]);
  extracted = await pushImage(registry, 'library/extracted', '1', [{ 'etc/hello': 'extracted ahead\n' }, { 'usr/share/data.bin': randomBytes(400_000) }]);
  slow = await pushImage(registry, 'library/slow', '1', [{ 'opt/slow.bin': randomBytes(30_000_000) }]);
  proxy = await startFaultyProxy(registry.url);
  ci = await newStaticToken();
  server = await startServer({
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: proxy.url } }),
    AUTH_USERS: JSON.stringify({ op: await hashPassword(password) }),
    AUTH_TOKENS: JSON.stringify({ ci: ci.hash }),
    AUTH_RULES: 'admin to op; warm docker.io/library/* to ci; pull docker.io/** to anonymous',
    WARM_PLATFORMS: 'linux/amd64,linux/arm64',
    TAG_TTL_SECONDS: '3600',
  });
});
after(async () => {
  await server?.stop();
  await proxy?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const asCi = { get authorization() { return `Bearer ${ci.token}`; } };
const asAdmin = { authorization: `Basic ${Buffer.from(`op:${password}`).toString('base64')}` };
const blobsOf = (i: { configDigest: string; layers: Array<{ digest: string; size: number }> }) => [i.configDigest, ...i.layers.map((l) => l.digest)];
const errors = async (res: Response) => ((await res.json()) as { errors: Array<{ code: string; detail: unknown }> }).errors;
const post = (body: unknown, headers: Record<string, string> = asCi) =>
  fetch(`${server.url}/api/warm`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });

async function warm(args: string[], env: Record<string, string> = { PULLTHROUGH_TOKEN: ci.token }): Promise<{ code: number; stdout: string; stderr: string }> {
  const cli = await buildCli();
  return new Promise((resolve) =>
    execFile(process.execPath, [cli, 'warm', ...args, '--server', server.url], { env: { ...process.env, ...env }, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

test('POST /api/warm: a bad body is 400 REQUEST_INVALID; anonymous is asked to authenticate; a token warms only what its grant names; runs are not readable by others', async () => {
  for (const body of ['{not json', {}, { images: [] }, { images: ['alpine'], platforms: 'linux/amd64' }, { images: ['alpine'], extract: 'yes' }]) {
    const res = await post(body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal((await errors(res))[0]!.code, 'REQUEST_INVALID');
  }
  const badPlatform = await post({ images: ['alpine'], platforms: ['linux'] });
  assert.equal((await errors(badPlatform))[0]!.code, 'PLATFORM_INVALID');
  assert.equal((await post({ images: ['library/base:1'] }, {})).status, 401);
  const denied = await post({ images: ['library/base:1', 'acme/app:1'] });
  assert.equal(denied.status, 403);
  assert.deepEqual((await errors(denied))[0]!.detail, { grant: 'warm', images: ['acme/app:1'] });
  assert.equal((await fetch(`${server.url}/api/warm/00000000-0000-0000-0000-000000000000`, { headers: asAdmin })).status, 404);
  // The admin may warm anything; the CI token cannot read the admin's run.
  const started = await post({ images: ['acme/app:1'] }, asAdmin);
  assert.equal(started.status, 202);
  const { id } = (await started.json()) as { id: string };
  assert.equal((await fetch(`${server.url}/api/warm/${id}`, { headers: asAdmin })).status, 200);
  const other = await fetch(`${server.url}/api/warm/${id}`, { headers: asCi });
  assert.equal(other.status, 404);
  assert.equal((await errors(other))[0]!.code, 'WARM_UNKNOWN');
});

test('`pullthrough warm --wait` stores three images (an index: both platforms) as the CI token; its events stream to the end; a second warm-up, from a file, moves no byte', async () => {
  const first = await warm(['library/base:1', 'library/tool:2', 'library/multi:1', '--wait']);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /warm: 4 images stored/);
  assert.match(first.stderr, /library\/multi:1 \(linux\/arm64\): done/, 'plain progress lines when not on a terminal');
  const sizes = [base, tool, ...multi.images].flatMap((i) => [i.layers.reduce((n, l) => n + l.size, 0)]);
  assert.ok(proxy.blobBytes >= sizes.reduce((a, b) => a + b, 0), `every layer came through the upstream once: ${proxy.blobBytes}`);

  // The run as the API and its event stream tell it.
  const started = await post({ images: ['library/base:1'] });
  const { id, events_url } = (await started.json()) as { id: string; events_url: string };
  const stream = await fetch(events_url, { headers: asCi });
  assert.equal(stream.headers.get('content-type'), 'text/event-stream');
  const text = await stream.text();
  assert.match(text, /^event: progress\ndata: \{/m);
  assert.match(text, /event: end\ndata: \{"state":"done"\}/);
  const status = (await (await fetch(`${server.url}/api/warm/${id}`, { headers: asCi })).json()) as WireWarmStatus;
  assert.equal(status.state, 'done');
  assert.deepEqual(status.images.map((i) => [i.reference, i.state, i.bytes_done === i.bytes_total]), [['library/base:1', 'done', true]]);
  assert.deepEqual(new Set(status.images[0]!.blobs.map((b) => b.digest)), new Set(blobsOf(base)));

  const moved = proxy.blobBytes;
  const list = join(dir, 'images.txt');
  await writeFile(list, '# base images of the pipeline\nlibrary/base:1\n\nlibrary/tool:2   # the build tool\nlibrary/multi:1\n');
  const second = await warm(['--from-file', list, '--wait']);
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /warm: 4 images stored/);
  assert.equal(proxy.blobBytes, moved, 'warming what is warm moves no byte');
});

test('a warm-up that cannot finish exits 1 naming the image and its error; without --wait it prints the run and exits 0', async () => {
  const failed = await warm(['library/base:1', 'library/nothere:1', '--wait']);
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /library\/nothere:1: MANIFEST_UNKNOWN/);
  const queued = await warm(['library/base:1']);
  assert.equal(queued.code, 0, queued.stderr);
  assert.match(queued.stdout, /warm-up [0-9a-f-]{36} started/);
  const usage = await warm([]);
  assert.equal(usage.code, 2);
});

test('--timeout: a warm-up not done in time exits 1 naming what is still running; waiting again sees it through', async () => {
  proxy.fault = 'slow'; // 10 MB/s: the 30 MB layer takes seconds
  try {
    const late = await warm(['library/slow:1', '--wait', '--timeout', '1']);
    assert.equal(late.code, 1);
    assert.match(late.stderr, /not done after 1 s; still waiting for:\n {2}library\/slow:1: running/);
  } finally {
    proxy.fault = 'none';
  }
  const done = await warm(['library/slow:1', '--wait']);
  assert.equal(done.code, 0, done.stderr);
  assert.ok(slow.layers[0]!.size > 1_000_000);
});

test('`warm --extract`, then the upstream goes away: `pullthrough rootfs` builds the image and skopeo, podman and ctr pull every warmed image with the upstream digests', async () => {
  const prepared = await warm(['library/extracted:1', '--extract', '--wait'], { PULLTHROUGH_USER: 'op', PULLTHROUGH_PASSWORD: password });
  assert.equal(prepared.code, 0, prepared.stderr);
  assert.match(prepared.stdout, /1 images stored and extracted/);

  await proxy.stop();
  await registry.stop();
  const rootfs = join(dir, 'rootfs');
  const built = await pullthroughRootfs(['library/extracted:1', rootfs, '--server', server.url]);
  assert.equal(built.code, 0, built.stderr);
  assert.equal(await readFile(join(rootfs, 'etc', 'hello'), 'utf8'), 'extracted ahead\n');

  const warmed = [
    { name: 'library/base:1', digest: base.manifestDigest, index: false },
    { name: 'library/tool:2', digest: tool.manifestDigest, index: false },
    { name: 'library/multi:1', digest: multi.manifestDigest, index: true },
  ];
  for (const image of warmed) assert.equal(await skopeoPull(server.host, image.name, join(dir, 'skopeo', image.name.replace(/[/:]/g, '_')), image.index), image.digest, `skopeo ${image.name}`);
  const podman = await podmanWithMirror(server.host);
  try {
    for (const image of warmed) assert.equal(await podman.pull(image.name), image.digest, `podman ${image.name}`);
  } finally {
    await podman.remove();
  }
  const containerd = await containerdWithMirror(server.host);
  try {
    for (const image of warmed) assert.equal(await containerd.pull(image.name, image.index), image.digest, `ctr ${image.name}`);
  } finally {
    await containerd.stop();
  }
});
