// Offline import (core/cache/import.ts) through the server process, whose upstream is never
// there: archives made by skopeo (`oci-archive:`, `docker-archive:`, an `oci:` directory)
// are imported with `pullthrough import`, then pulled by skopeo and podman with the
// digests of the image they came from. A truncated archive and one with a corrupted
// layer import nothing (the store's files and the catalog are as before) and the error
// names the member.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry } from '../setup/registry.ts';
import { pushImage, pushIndex, type BuiltImage, type BuiltIndex } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { skopeoPull, podmanWithMirror } from '../setup/clients.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { buildCli } from '../../scripts/build.ts';
import { digestOf } from '../../core/oci/digest.ts';

const run = promisify(execFile);
const password = 'import-admin-pass';
let dir: string;
let server: Server;
let image: BuiltImage;
let other: BuiltImage;
let multi: BuiltIndex;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-import-'));
  // A registry only to build the archives with skopeo; the mirror never sees it.
  const registry = await startRegistry();
  try {
    image = await pushImage(registry, 'library/src', '1', [{ 'etc/os-release': 'ID=imported\n' }, { 'usr/lib/data.bin': randomBytes(1_500_000) }]);
    other = await pushImage(registry, 'library/other', '1', [{ 'opt/other.bin': randomBytes(800_000) }]);
    const copy = (from: string, to: string) => run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${registry.host}/${from}`, to]);
    await copy('library/src:1', `oci-archive:${join(dir, 'oci.tar')}:1`);
    await copy('library/src:1', `docker-archive:${join(dir, 'docker.tar')}:library/src:1`);
    await copy('library/src:1', `oci:${join(dir, 'layout')}:1`);
    await copy('library/other:1', `oci-archive:${join(dir, 'other.tar')}:1`);
    multi = await pushIndex(registry, 'library/multi', '1', [
      { platform: { os: 'linux', architecture: 'amd64' }, layerFiles: [{ 'etc/arch': 'amd64\n' }] },
      { platform: { os: 'linux', architecture: 'arm64' }, layerFiles: [{ 'etc/arch': 'arm64\n' }] },
    ]);
    await run('skopeo', ['copy', '--quiet', '--all', '--src-tls-verify=false', `docker://${registry.host}/library/multi:1`, `oci-archive:${join(dir, 'multi.tar')}:1`]);
  } finally {
    await registry.stop();
  }
  server = await startServer({
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: 'http://127.0.0.1:9' } }),
    AUTH_USERS: JSON.stringify({ op: await hashPassword(password) }),
    AUTH_RULES: 'admin to op; pull docker.io/** to anonymous',
  });
});
after(async () => {
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const pullthroughImport = (source: string, as: string) => pullthrough(['import', source, '--as', as], { PULLTHROUGH_USER: 'op', PULLTHROUGH_PASSWORD: password });

async function pullthrough(args: string[], env: Record<string, string> = {}) {
  const cli = await buildCli();
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, [cli, ...args, '--server', server.url], { env: { ...process.env, ...env } }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

/** Every file of the store, for "nothing was written". */
async function storeFiles(): Promise<string[]> {
  const root = join(dir, 'data', 'store');
  return (await readdir(root, { recursive: true, withFileTypes: true })).filter((e) => e.isFile() && !e.parentPath.includes('/.')).map((e) => join(e.parentPath, e.name)).sort();
}

test('an oci-archive tar and an oci: directory import with no upstream; skopeo and podman pull them with the original digests', async () => {
  const imported = await pullthroughImport(join(dir, 'oci.tar'), 'docker.io/library/imported:1');
  assert.equal(imported.code, 0, imported.stderr);
  assert.equal(imported.stdout.trim(), `docker.io/library/imported:1 ${image.manifestDigest}`);
  assert.match(imported.stderr, /imported a oci-layout: 3 blobs/);
  assert.equal(await skopeoPull(server.host, 'library/imported:1', join(dir, 'pulled-oci')), image.manifestDigest);

  const fromDir = await pullthroughImport(join(dir, 'layout'), 'library/fromdir:1');
  assert.equal(fromDir.code, 0, fromDir.stderr);
  assert.equal(fromDir.stdout.trim(), `docker.io/library/fromdir:1 ${image.manifestDigest}`);
  assert.match(fromDir.stderr, /0 B written/, 'the blobs were stored already: verified, not written again');
  const podman = await podmanWithMirror(server.host);
  try {
    assert.equal(await podman.pull('library/fromdir:1'), image.manifestDigest);
  } finally {
    await podman.remove();
  }
});

test('a docker-archive tar imports as an OCI manifest over the same config and layers: skopeo pulls them with the archive\'s digests', async () => {
  const imported = await pullthroughImport(join(dir, 'docker.tar'), 'library/fromdocker:2');
  assert.equal(imported.code, 0, imported.stderr);
  const [tag, digest] = imported.stdout.trim().split(' ');
  assert.equal(tag, 'docker.io/library/fromdocker:2');
  assert.equal(await skopeoPull(server.host, 'library/fromdocker:2', join(dir, 'pulled-docker')), digest);
  const res = await fetch(`${server.url}/v2/library/fromdocker/manifests/2`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const manifest = (await res.json()) as { config: { digest: string }; layers: Array<{ digest: string; mediaType: string }> };
  assert.equal(manifest.config.digest, image.configDigest, 'the config byte for byte');
  const config = JSON.parse(await readFile(join(dir, 'pulled-docker', image.configDigest.slice(7)), 'utf8')) as { rootfs: { diff_ids: string[] } };
  assert.deepEqual(manifest.layers.map((l) => l.digest), config.rootfs.diff_ids, 'the layers are the archive\'s tars, their diff_ids');
  assert.ok(manifest.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar'));
});

test('a truncated archive and one with a corrupted layer import nothing and name the member; the API needs the admin', async () => {
  const bytes = await readFile(join(dir, 'other.tar'));
  const filesBefore = await storeFiles();
  await writeFile(join(dir, 'truncated.tar'), bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  const truncated = await pullthroughImport(join(dir, 'truncated.tar'), 'library/truncated:1');
  assert.equal(truncated.code, 1);
  assert.match(truncated.stderr, /nothing imported \(400\): REQUEST_INVALID: the archive is not a complete tar/);

  // Flip one byte inside the largest member (the layer).
  const corrupt = Buffer.from(bytes);
  let largest = { offset: 0, size: 0, name: '' };
  for (let at = 0; at + 512 <= corrupt.length; ) {
    const name = corrupt.subarray(at, at + 100).toString('utf8').replace(/\0.*$/s, '');
    if (name === '') break;
    const size = parseInt(corrupt.subarray(at + 124, at + 136).toString('ascii').replace(/\0.*$/s, '').trim() || '0', 8);
    if (size > largest.size) largest = { offset: at + 512, size, name };
    at += 512 + Math.ceil(size / 512) * 512;
  }
  assert.ok(largest.size > 100_000, 'found the layer member');
  corrupt[largest.offset + 1000] = corrupt[largest.offset + 1000]! ^ 0xff;
  await writeFile(join(dir, 'corrupt.tar'), corrupt);
  const wrong = await pullthroughImport(join(dir, 'corrupt.tar'), 'library/corrupt:1');
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, new RegExp(`nothing imported \\(400\\): REQUEST_INVALID: ${largest.name.replace(/^\.\//, '')}: content does not match its digest`));

  assert.deepEqual(await storeFiles(), filesBefore, 'nothing was written');
  for (const name of ['truncated', 'corrupt']) assert.notEqual((await fetch(`${server.url}/v2/library/${name}/manifests/1`)).status, 200, `no ${name} tag`);
  assert.notEqual((await fetch(`${server.url}/v2/library/other/blobs/${other.layers[0]!.digest}`, { method: 'HEAD' })).status, 200, 'the layer is not served');

  const anonymous = await fetch(`${server.url}/api/import?as=library/x:1`, { method: 'POST', body: bytes });
  assert.equal(anonymous.status, 401);
  const noTarget = await fetch(`${server.url}/api/import`, { method: 'POST', body: bytes, headers: { authorization: `Basic ${Buffer.from(`op:${password}`).toString('base64')}` } });
  assert.equal(noTarget.status, 400);
});

test('an index archive (skopeo --all) imports whole; `pullthrough export` writes cached images back as OCI layout tars skopeo reads with the same digests', async () => {
  const imported = await pullthroughImport(join(dir, 'multi.tar'), 'library/multi:1');
  assert.equal(imported.code, 0, imported.stderr);
  assert.equal(imported.stdout.trim(), `docker.io/library/multi:1 ${multi.manifestDigest}`);
  assert.equal(await skopeoPull(server.host, 'library/multi:1', join(dir, 'pulled-multi'), true), multi.manifestDigest, 'every platform served');

  for (const [name, digest, all] of [['library/imported:1', image.manifestDigest, false], ['library/multi:1', multi.manifestDigest, true]] as const) {
    const file = join(dir, `${name.replace(/[/:]/g, '_')}.tar`);
    const exported = await pullthrough(['export', name, file]);
    assert.equal(exported.code, 0, exported.stderr);
    assert.equal(exported.stdout.trim(), `${file} ${digest}`);
    const out = join(dir, `read-${name.replace(/[/:]/g, '_')}`);
    await run('skopeo', ['copy', '--quiet', ...(all ? ['--all'] : []), `oci-archive:${file}:1`, `dir:${out}`]);
    assert.equal(digestOf(await readFile(join(out, 'manifest.json'))), digest, `${name} read back by skopeo`);
  }
  const missing = await pullthrough(['export', 'library/nothere:1', join(dir, 'nothere.tar')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /nothing written/);
});
