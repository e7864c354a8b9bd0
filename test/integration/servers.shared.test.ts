// How the Node deployment grows: several servers on one DATA_DIR (one libSQL file, one
// filesystem store), pulled from at once by real clients. None of their requests may fail.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../../core/adapters/libsql-catalog.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { skopeoPull } from '../setup/clients.ts';
import { until } from '../setup/process.ts';

let registry: Registry;
let image: BuiltImage;
let servers: Server[] = [];
let dir: string;

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/shared', '1', [
    { 'etc/os-release': 'ID=shared\n' },
    { 'usr/lib/a': Buffer.alloc(1_500_000, 1) },
    { 'usr/lib/b': Buffer.alloc(800_000, 2) },
  ]);
  dir = await mkdtemp(join(tmpdir(), 'pt-shared-'));
  const env = { DATA_DIR: join(dir, 'data'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }) };
  // One after the other, as a supervisor starts them: the first applies the migrations.
  servers.push(await startServer(env));
  servers.push(await startServer(env));
});
after(async () => {
  for (const s of servers) await s.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('two servers on one DATA_DIR serve six concurrent skopeo pulls of one cold image without an error, and every blob ends up ingested', async () => {
  const pulls = Array.from({ length: 6 }, (_, i) => skopeoPull(servers[i % 2]!.host, 'shared:1', join(dir, `pull-${i}`)));
  const digests = await Promise.all(pulls);
  assert.deepEqual(digests, Array(6).fill(image.manifestDigest));
  for (let i = 0; i < 6; i++) {
    for (const layer of image.layers) {
      const bytes = await readFile(join(dir, `pull-${i}`, layer.digest.slice('sha256:'.length)));
      assert.equal(bytes.length, layer.size, `pull ${i}: layer ${layer.digest}`);
    }
  }
  const { db, close } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`);
  try {
    const catalog = new LibsqlCatalog(db);
    const digestsStored = [image.configDigest, ...image.layers.map((l) => l.digest)];
    await until(async () => (await Promise.all(digestsStored.map((d) => catalog.blob(d)))).every((b) => b?.state === 'ready'), 30_000, 'ingest by either server');
  } finally {
    close();
  }
  for (const s of servers) {
    const failures = s.output().split('\n').filter((l) => /"status":5\d\d|"level":"error"/.test(l));
    assert.deepEqual(failures, [], 'no 5xx and no error logged');
  }
});
