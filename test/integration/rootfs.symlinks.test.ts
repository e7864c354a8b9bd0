// `pullthrough rootfs` on what real images are full of: symlinks whose targets are missing
// (alternatives, /etc/mtab -> /proc/mounts, links into /run), replaced, whited out and
// hidden by upper layers. umoci unpack of the same image is the reference. Run on the
// pinned Node and on the machine's own Node 20, where sandbox hosts run the CLI.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type LayerSpec } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { gnuLayer, pullthroughRootfs, snapshot, systemNode, umociRootfs } from '../setup/rootfs.ts';

let registry: Registry;
let server: Server;
let dir: string;
const node20 = systemNode();

/** Layer 1: links to files that will be replaced, and dangling links of every kind. */
const lower = (root: string): Promise<LayerSpec> =>
  gnuLayer(join(root, 'lower'), 'pax', async (r) => {
    for (const d of ['etc/alternatives', 'usr/bin', 'a', 'opq', 'run']) await mkdir(join(r, d), { recursive: true });
    await writeFile(join(r, 'etc/hello.txt'), 'hello from layer 1\n');
    await symlink('../etc/hello.txt', join(r, 'usr/bin/hello-link'));
    await symlink('../missing-relative', join(r, 'a/rel'));
    await symlink('/nonexistent/absolute', join(r, 'a/abs'));
    await symlink('/proc/mounts', join(r, 'etc/mtab'));
    await symlink('/run/missing.pid', join(r, 'run/service.pid'));
    await symlink('missing-b', join(r, 'b'));
    await symlink('/nowhere', join(r, 'opq/x'));
    await symlink('../nowhere', join(r, 'opq/y'));
    await writeFile(join(r, 'opq/z'), 'hidden by the opaque marker\n');
    // A link to a directory outside the root, by absolute and by relative path: replacing
    // it must replace the link, never write through it.
    await symlink('/tmp', join(r, 'out-abs'));
    await symlink('../../../../../../tmp', join(r, 'out-rel'));
    // Alternatives: a chain of absolute links whose end does not exist yet.
    await symlink('/etc/alternatives/editor', join(r, 'usr/bin/editor'));
    await symlink('/usr/bin/vim.basic', join(r, 'etc/alternatives/editor'));
  }, ['etc', 'etc/alternatives', 'etc/hello.txt', 'etc/mtab', 'etc/alternatives/editor', 'usr', 'usr/bin', 'usr/bin/hello-link', 'usr/bin/editor',
    'a', 'a/rel', 'a/abs', 'run', 'run/service.pid', 'b', 'opq', 'opq/x', 'opq/y', 'opq/z', 'out-abs', 'out-rel']);

/** Layer 2: replaces, whites out and opaque-hides them. */
const upper = (root: string, marker: string): Promise<LayerSpec> =>
  gnuLayer(join(root, 'upper'), 'gnu', async (r) => {
    for (const d of ['etc/alternatives', 'usr/bin', 'a/abs', 'opq', 'run']) await mkdir(join(r, d), { recursive: true });
    await writeFile(join(r, 'etc/hello.txt'), 'hello from layer 2\n');
    await symlink('../etc/hello.txt', join(r, 'usr/bin/hello-link'));
    await writeFile(join(r, 'a/rel'), 'a file where a dangling relative link was\n');
    await writeFile(join(r, 'a/abs/inside'), 'a directory where a dangling absolute link was\n');
    await symlink('/proc/self/mounts', join(r, 'etc/mtab'));
    await writeFile(join(r, 'run/.wh.service.pid'), '');
    await writeFile(join(r, '.wh.b'), '');
    await writeFile(join(r, 'opq/.wh..wh..opq'), '');
    await writeFile(join(r, 'opq/new'), 'the only entry left in opq\n');
    await writeFile(join(r, 'out-abs'), `${marker}\n`);
    await writeFile(join(r, 'out-rel'), `${marker}\n`);
    await symlink('/usr/bin/nano', join(r, 'etc/alternatives/editor'));
    await writeFile(join(r, 'usr/bin/nano'), 'nano\n');
  }, ['etc', 'etc/hello.txt', 'etc/mtab', 'etc/alternatives', 'etc/alternatives/editor', 'usr', 'usr/bin', 'usr/bin/hello-link', 'usr/bin/nano',
    'a', 'a/rel', 'a/abs', 'a/abs/inside', 'run', 'run/.wh.service.pid', '.wh.b', 'opq', 'opq/.wh..wh..opq', 'opq/new', 'out-abs', 'out-rel']);

const marker = `written-through-a-link-${process.pid}`;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-rootfs-links-'));
  registry = await startRegistry();
  // The two-layer image of the report: a file and a link to it, both again in layer 2.
  const hello = (name: string, text: string) =>
    gnuLayer(join(dir, name), 'pax', async (r) => {
      await mkdir(join(r, 'usr/bin'), { recursive: true });
      await mkdir(join(r, 'etc'));
      await writeFile(join(r, 'etc/hello.txt'), text);
      await symlink('../etc/hello.txt', join(r, 'usr/bin/hello-link'));
    }, ['etc', 'etc/hello.txt', 'usr', 'usr/bin', 'usr/bin/hello-link']);
  await pushImage(registry, 'library/hello', 'v1', [await hello('h1', 'one\n'), await hello('h2', 'two\n')]);
  await pushImage(registry, 'library/dangling', 'v1', [await lower(join(dir, 'trees')), await upper(join(dir, 'trees'), marker)]);
  server = await startServer({ DATA_DIR: join(dir, 'data'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }), EXTRACT: 'eager' });
});

after(async () => {
  await server?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const runtimes: Array<[string, string | undefined]> = [
  [`the pinned Node ${process.version}`, process.execPath],
  [`the machine's Node ${node20?.version ?? '(none found)'}`, node20?.path],
];

for (const [runtime, node] of runtimes) {
  const skip = !node && 'no Node outside node_modules on this machine';
  for (const image of ['library/hello:v1', 'library/dangling:v1']) {
    test(`on ${runtime}: rootfs of ${image} equals umoci unpack (links replaced, whited out, opaque-hidden while dangling)`, { skip, timeout: 180_000 }, async () => {
      const slug = `${image.replace(/\W+/g, '-')}-${node!.replace(/\W+/g, '-')}`;
      const ours = join(dir, 'ours', slug);
      const result = await pullthroughRootfs([image, ours, '--server', server.url], { node });
      assert.equal(result.code, 0, result.stderr);
      const reference = await umociRootfs(registry, image, join(dir, 'umoci', slug));
      assert.deepEqual(await snapshot(ours), await snapshot(reference));
    });
  }
}

test('the dangling-link image ends as OCI says: each replaced, whited-out or hidden link is gone, nothing was written through a link', async () => {
  const ours = join(dir, 'ours', 'direct');
  const result = await pullthroughRootfs(['library/dangling:v1', ours, '--server', server.url]);
  assert.equal(result.code, 0, result.stderr);
  const tree = await snapshot(ours);
  assert.deepEqual(tree['usr/bin/hello-link'], { type: 'symlink', mode: 'n/a', link: '../etc/hello.txt' });
  assert.equal(tree['a/rel']?.type, 'file');
  assert.equal(tree['a/abs']?.type, 'dir');
  assert.equal(tree['a/abs/inside']?.type, 'file');
  assert.equal(tree['etc/mtab']?.link, '/proc/self/mounts');
  assert.equal(tree['etc/alternatives/editor']?.link, '/usr/bin/nano');
  assert.equal(tree['usr/bin/editor']?.link, '/etc/alternatives/editor');
  for (const gone of ['b', 'run/service.pid', 'opq/x', 'opq/y', 'opq/z']) assert.equal(tree[gone], undefined, `${gone} is gone`);
  assert.equal(tree['opq/new']?.type, 'file');
  for (const out of ['out-abs', 'out-rel']) assert.equal(tree[out]?.type, 'file', `${out} became a file`);
  // Directories get their own modes at the end, not the 0700 they are created with.
  assert.equal(tree.etc?.mode, '0755');
  const { readdir } = await import('node:fs/promises');
  assert.equal((await readdir('/tmp')).includes(marker), false, 'nothing was written into /tmp through a link');
});
