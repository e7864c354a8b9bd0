// kill -9 of the server in the middle of a blob's transfer, with clients attached, on both
// stores (the filesystem, and Ceph RGW): the clients are cut, nothing is visible under the
// final key, and the restarted server verifies what was staged again (the staging file;
// on S3 the killed server's spool on this host) and resumes the transfer from there with
// Range, leaving no staged chunk, temp file or multipart upload.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../../core/adapters/libsql-catalog.ts';
import { FilesystemBlobStore } from '../../core/adapters/fs-store.ts';
import { S3BlobStore, STAGING_PREFIX } from '../../core/adapters/s3-store.ts';
import type { BlobStore } from '../../core/ports/blob-store.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startFaultyProxy, type FaultyProxy } from '../setup/faulty-proxy.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';

const PART = 5 * 1024 * 1024;
let registry: Registry;
let proxy: FaultyProxy;
let image: BuiltImage;
let dir: string;
let s3: { client: S3Client; bucket: string } | undefined;
const servers: Server[] = [];

before(async () => {
  s3 = await s3TestBucket('crash');
  registry = await startRegistry();
  image = await pushImage(registry, 'library/big', '1', [{ 'big.bin': randomBytes(64 * 1024 * 1024) }]);
  proxy = await startFaultyProxy(registry.url);
  dir = await mkdtemp(join(tmpdir(), 'pt-crash-'));
});
after(async () => {
  for (const server of servers) await server.stop('SIGKILL');
  await proxy?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Reads a body to its end: its SHA-256 and length, or the error that cut it. */
async function drain(res: Response): Promise<{ digest: string; bytes: number } | Error> {
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) (hash.update(chunk), (bytes += chunk.byteLength));
    return { digest: `sha256:${hash.digest('hex')}`, bytes };
  } catch (e) {
    return e as Error;
  }
}

const sizeUnder = async (path: string): Promise<number> => {
  let total = 0;
  for (const name of await filesUnder(path)) total += await stat(join(path, name)).then((s) => (s.isFile() ? s.size : 0), () => 0);
  return total;
};
const filesUnder = async (path: string): Promise<string[]> => (await readdir(path, { recursive: true }).catch(() => [] as string[])).map(String);

for (const kind of ['filesystem', 's3'] as const) {
  test(`kill -9 with clients attached (${kind}): they are cut, the restarted server resumes from what was staged, and nothing temporary is left`, { skip: kind === 's3' && !process.env.S3_TEST_ENDPOINT }, async () => {
    const data = join(dir, kind);
    const env = {
      DATA_DIR: data,
      UPSTREAMS: JSON.stringify({ 'docker.io': { url: proxy.url } }),
      ...(kind === 's3' ? s3ServerEnv(s3!.bucket) : {}),
      INGEST_PART_SIZE_BYTES: String(PART),
      JOB_LEASE_SECONDS: '2',
      EXTRACT: 'off',
    };
    const store: BlobStore = kind === 's3' ? new S3BlobStore(s3!.client, { bucket: s3!.bucket, partSizeBytes: PART, queueSize: 2 }) : new FilesystemBlobStore(join(data, 'store'));
    const layer = image.layers[0]!;
    const key = `blobs/sha256/${layer.digest.slice(7)}`;
    proxy.fault = 'slow';
    proxy.blobRanges = [];
    const first = await startServer(env);
    servers.push(first);
    assert.equal((await fetch(`${first.url}/v2/big/manifests/1`)).status, 200);
    const clients = [0, 1].map(async () => drain(await fetch(`${first.url}/v2/big/blobs/${layer.digest}`)));
    // On S3 the server uploads its parts straight into a multipart upload nobody can read
    // back: what survives the kill is its spool on this host, which the next one resumes from.
    const staged = async () => (kind === 's3' ? sizeUnder(join(data, 'spool')) : store.staging(key).length());
    await until(async () => (await staged()) >= 0.3 * layer.size, 60_000, 'a third of the blob to be staged');
    await first.stop('SIGKILL');
    for (const result of await Promise.all(clients)) {
      assert.ok(result instanceof Error || result.bytes < layer.size, 'a client of the killed server never gets the whole blob');
    }
    assert.equal(await store.stat(key), undefined, 'nothing under the final key');
    const kept = await staged();
    assert.ok(kept >= 0.3 * layer.size, `${kept} bytes staged survive the kill`);
    if (kind === 's3') {
      const chunks = (await s3!.client.send(new ListObjectsV2Command({ Bucket: s3!.bucket, Prefix: STAGING_PREFIX }))).Contents ?? [];
      assert.deepEqual(chunks.map((o) => o.Key), [], 'no chunk objects while nobody elsewhere follows: each byte is written to the bucket once');
    }

    proxy.fault = 'none';
    const rangesBefore = proxy.blobRanges.length;
    const second = await startServer(env);
    servers.push(second);
    // A client of the restarted server waits for the dead owner's lease to run out, then
    // the transfer resumes (here, or in the restarted ingest job) and feeds it every byte.
    const result = await drain(await fetch(`${second.url}/v2/big/blobs/${layer.digest}`));
    assert.deepEqual(result, { digest: layer.digest, bytes: layer.size });
    const { db, close } = await openDatabase(`file:${join(data, 'pullthrough.db')}`);
    try {
      const catalog = new LibsqlCatalog(db);
      await until(async () => (await catalog.blob(layer.digest))?.state === 'ready', 60_000, 'the blob to be published');
    } finally {
      close();
    }
    const warnings = () => second.output().split('\n').filter((l) => /"level":"(warn|error)"/.test(l)).join('\n');
    assert.deepEqual(proxy.blobRanges.slice(rangesBefore), [`bytes=${kept}-`], `one upstream request after the restart, for the rest only; the server warned:\n${warnings()}`);
    assert.match(second.output(), new RegExp(`"msg":"transfer resumes".*"after":"restart","source":"${kind === 's3' ? 'spool' : 'staging'}"`));
    assert.equal(await store.staging(key).length(), 0, 'no staged bytes left');
    if (kind === 's3') {
      const { client, bucket } = s3!;
      const uploads = (await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? [];
      assert.deepEqual(uploads.map((u) => u.Key), [], 'no multipart upload left open');
      const chunks = (await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: STAGING_PREFIX }))).Contents ?? [];
      assert.deepEqual(chunks.map((o) => o.Key), [], 'no staged chunk left');
      // The killed server's spool was taken over by the next one; this one's is empty.
      assert.deepEqual(await readdir(join(data, 'spool')), [`${hostname()}-${second.child.pid}`], 'only the live server has a spool');
      assert.deepEqual(await filesUnder(join(data, 'spool', `${hostname()}-${second.child.pid}`)), [], 'and nothing in it');
    } else {
      assert.deepEqual(await filesUnder(join(data, 'store', '.staging')), [], 'no staging file left');
      assert.deepEqual(await filesUnder(join(data, 'store', '.tmp')), [], 'no temp file left');
      assert.deepEqual(await filesUnder(join(data, 'spool')), [], 'no spool left');
    }
    await second.stop();
  });
}
