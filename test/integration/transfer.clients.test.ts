// The one transfer per cold blob with real clients: eight skopeo pulls, a podman pull and
// a containerd (ctr) pull of a cold image at once through one server (the process
// `npm start` runs), bytes counted between the mirror and the upstream by a TCP hop
// (test/setup/wan.ts, capped at 30 MB/s per connection so that the pulls overlap).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../../core/adapters/libsql-catalog.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { skopeoPull, podmanWithMirror, containerdWithMirror, type Containerd, type Podman } from '../setup/clients.ts';
import { startWan, type Wan } from '../setup/wan.ts';
import { until } from '../setup/process.ts';

let registry: Registry;
let wan: Wan;
let image: BuiltImage;
let server: Server;
let dir: string;
let podman: Podman;
let containerd: Containerd;

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/fanout', '1', [{ 'etc/fanout': 'fanout\n' }, { 'usr/lib/big': randomBytes(16 * 1024 * 1024) }]);
  const [host, port] = registry.host.split(':') as [string, string];
  wan = await startWan({ host, port: Number(port) }, { rttMs: 0, bytesPerSecond: 30 * 1000 * 1000 });
  dir = await mkdtemp(join(tmpdir(), 'pt-fanout-'));
  server = await startServer({ DATA_DIR: join(dir, 'data'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: wan.url } }) });
  podman = await podmanWithMirror(server.host);
  containerd = await containerdWithMirror(server.host);
});
after(async () => {
  await podman?.remove();
  await containerd?.stop();
  await server?.stop();
  await wan?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('eight skopeo pulls, a podman pull and a ctr pull of a cold image at once cost one upstream copy of its blobs, and each gets every byte', async () => {
  wan.reset();
  const digests = await Promise.all([
    ...Array.from({ length: 8 }, (_, i) => skopeoPull(server.host, 'fanout:1', join(dir, `pull-${i}`))),
    podman.pull('library/fanout:1'),
    containerd.pull('library/fanout:1'),
  ]);
  assert.deepEqual(digests, Array(10).fill(image.manifestDigest));
  for (let i = 0; i < 8; i++) {
    for (const layer of image.layers) assert.equal((await readFile(join(dir, `pull-${i}`, layer.digest.slice(7)))).length, layer.size);
  }
  const { db, close } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`);
  try {
    const catalog = new LibsqlCatalog(db);
    await until(async () => (await Promise.all([image.configDigest, ...image.layers.map((l) => l.digest)].map((d) => catalog.blob(d)))).every((b) => b?.state === 'ready'), 30_000, 'the blobs published');
  } finally {
    close();
  }
  const blobBytes = image.layers.reduce((n, l) => n + l.size, 0);
  // Manifests, pings and response headers ride along: a few kilobytes over one copy.
  const fetched = wan.bytesFromFar();
  assert.ok(fetched >= blobBytes, `at least one copy: ${fetched} bytes`);
  assert.ok(fetched < blobBytes * 1.01 + 64 * 1024, `one copy, not eight: ${fetched} bytes for ${blobBytes} of blobs`);
});
