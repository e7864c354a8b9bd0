// One transfer per blob across processes: two Node servers on one database and one store
// (a shared DATA_DIR with its libSQL file; an S3 bucket with libSQL over HTTP), clients of
// both asking for a cold blob at once and later. The upstream is asked once; the second
// server's clients read what the first one stages as it lands.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../../core/adapters/libsql-catalog.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startFaultyProxy, type FaultyProxy } from '../setup/faulty-proxy.ts';
import { startServer, type Server } from '../setup/server.ts';
import { startHranaServer, type HranaServer } from '../setup/hrana-server.ts';
import { until } from '../setup/process.ts';
import { FilesystemBlobStore } from '../../core/adapters/fs-store.ts';
import { S3BlobStore } from '../../core/adapters/s3-store.ts';
import type { BlobStore } from '../../core/ports/blob-store.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';

let registry: Registry;
let proxy: FaultyProxy;
let dir: string;
let hrana: HranaServer | undefined;
const servers: Server[] = [];

before(async () => {
  registry = await startRegistry();
  proxy = await startFaultyProxy(registry.url);
  dir = await mkdtemp(join(tmpdir(), 'pt-processes-'));
});
after(async () => {
  for (const server of servers) await server.stop();
  await hrana?.stop();
  await proxy?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const digestOfBody = async (res: Response) => {
  assert.equal(res.status, 200);
  const hash = createHash('sha256');
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) hash.update(chunk);
  return `sha256:${hash.digest('hex')}`;
};

/** Upstream GETs of a blob so far, once the registry has logged every finished request. */
async function upstreamGets(name: string, digest: string): Promise<number> {
  const sentinel = `/v2/${name}/tags/list?sentinel=${Math.random()}`;
  await fetch(`${registry.url}${sentinel}`).then((r) => r.arrayBuffer());
  await until(async () => registry.requests().some((r) => r.path === sentinel), 10_000, 'the registry log');
  return registry.requests().filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`)).length;
}

for (const kind of ['filesystem', 's3'] as const) {
  test(`two servers on one database and one store (${kind}): one upstream transfer feeds the clients of both, late ones and a range included`, { skip: kind === 's3' && !process.env.S3_TEST_ENDPOINT }, async () => {
    const name = `library/processes-${kind}`;
    const image: BuiltImage = await pushImage(registry, name, '1', [{ 'data.bin': randomBytes(24 * 1024 * 1024) }]);
    const layer = image.layers[0]!;
    let env: Record<string, string>;
    let db: Awaited<ReturnType<typeof openDatabase>>;
    let store: BlobStore;
    if (kind === 's3') {
      hrana = await startHranaServer(join(dir, 'turso.sqlite'));
      const bucket = (await s3TestBucket('processes'))!;
      store = new S3BlobStore(bucket.client, { bucket: bucket.bucket, partSizeBytes: 5 * 1024 * 1024, queueSize: 2 });
      env = { DATA_DIR: join(dir, 's3-a'), LIBSQL_URL: hrana.url, LIBSQL_AUTH_TOKEN: hrana.authToken, ...s3ServerEnv(bucket.bucket) };
      db = await openDatabase(hrana.url, hrana.authToken);
    } else {
      env = { DATA_DIR: join(dir, 'fs') };
      store = new FilesystemBlobStore(join(dir, 'fs', 'store'));
      db = undefined!;
    }
    Object.assign(env, { UPSTREAMS: JSON.stringify({ 'docker.io': { url: proxy.url } }), EXTRACT: 'off', BLOB_DELIVERY: 'stream' });
    const a = await startServer(env);
    servers.push(a);
    // The second server has its own local directory (spool) with S3; on the filesystem it shares DATA_DIR.
    const b = await startServer(kind === 's3' ? { ...env, DATA_DIR: join(dir, 's3-b') } : env);
    servers.push(b);
    db ??= await openDatabase(`file:${join(dir, 'fs', 'pullthrough.db')}`);
    const catalog = new LibsqlCatalog(db.db);
    try {
      const before = await upstreamGets(name, layer.digest);
      proxy.fault = 'slow';
      const blob = (server: Server) => fetch(`${server.url}/v2/${name.slice('library/'.length)}/blobs/${layer.digest}`).then(digestOfBody);
      assert.equal((await fetch(`${a.url}/v2/${name.slice('library/'.length)}/manifests/1`)).status, 200);
      const early = [blob(a), blob(b)];
      await until(async () => (await catalog.blob(layer.digest))?.state === 'fetching', 30_000, 'the transfer to start');
      const late = [blob(b), blob(a), blob(b)];
      // A range of what the other server has staged already comes from its transfer too.
      await until(async () => (await store.staging(`blobs/sha256/${layer.digest.slice(7)}`).length()) >= 2000, 30_000, 'the first bytes staged');
      const range = await fetch(`${b.url}/v2/${name.slice('library/'.length)}/blobs/${layer.digest}`, { headers: { range: 'bytes=1000-1999' } });
      assert.equal(range.status, 206);
      assert.equal(range.headers.get('content-range'), `bytes 1000-1999/${layer.size}`);
      const ranged = Buffer.from(await range.arrayBuffer());
      assert.deepEqual(await Promise.all([...early, ...late]), Array(5).fill(layer.digest), 'every byte to every client of both servers');
      proxy.fault = 'none';
      await until(async () => (await catalog.blob(layer.digest))?.state === 'ready', 30_000, 'the blob to be published');
      assert.equal((await upstreamGets(name, layer.digest)) - before, 1, 'one upstream GET for both servers');
      const expected = Buffer.from(await (await fetch(`${registry.url}/v2/${name}/blobs/${layer.digest}`, { headers: { range: 'bytes=1000-1999' } })).arrayBuffer());
      assert.ok(ranged.equals(expected), 'the range holds the blob bytes');
    } finally {
      proxy.fault = 'none';
      db.close();
    }
  });
}
