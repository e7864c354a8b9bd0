// End to end: the real server process, skopeo pulling through it, Debian's registry upstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { blobs } from '../../schema/blobs.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { skopeoPull } from '../setup/clients.ts';

let registry: Registry;
let image: BuiltImage;
let server: Server;
let dir: string;

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/e2e', '1', [{ 'etc/os-release': 'ID=test\n' }, { 'usr/lib/big': Buffer.alloc(2_000_000, 9) }]);
  dir = await mkdtemp(join(tmpdir(), 'pt-e2e-'));
  server = await startServer({ DATA_DIR: join(dir, 'data'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }) });
});
after(async () => {
  await server?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const pull = (to: string) => skopeoPull(server.host, 'e2e:1', join(dir, to));

test('skopeo pulls cold then warm with upstream digests, the warm pull asks the upstream for no blob', async () => {
  assert.equal(await pull('cold'), image.manifestDigest);
  const { db, close } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`);
  try {
    await until(async () => (await db.select().from(blobs)).filter((b) => b.state === 'ready').length === 3, 30_000, 'ingest of config and layers');
  } finally {
    close();
  }
  const before = registry.requests().filter((r) => r.path.includes('/blobs/')).length;
  assert.equal(await pull('warm'), image.manifestDigest);
  assert.equal(registry.requests().filter((r) => r.path.includes('/blobs/')).length, before, 'no upstream blob request');
  await registry.stop();
  assert.equal(await pull('offline'), image.manifestDigest, 'a recently resolved tag works with the upstream down');
});
