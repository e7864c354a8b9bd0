// kill -9 of the server in the middle of a 200 MB ingest into Ceph RGW: nothing partial is
// visible, and after a restart the job runs again, completes, and leaves no multipart
// upload open.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, type S3Client } from '@aws-sdk/client-s3';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { blobs } from '../../schema/blobs.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startFaultyProxy } from '../setup/faulty-proxy.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';

let registry: Registry;
let proxy: Awaited<ReturnType<typeof startFaultyProxy>>;
let image: BuiltImage;
let dir: string;
let s3: { client: S3Client; bucket: string } | undefined;
const servers: Server[] = [];

before(async () => {
  s3 = await s3TestBucket('crash');
  if (!s3) return;
  registry = await startRegistry();
  image = await pushImage(registry, 'library/big', '1', [{ 'big.bin': randomBytes(200 * 1024 * 1024) }]);
  proxy = await startFaultyProxy(registry.url);
  dir = await mkdtemp(join(tmpdir(), 'pt-crash-'));
});
after(async () => {
  for (const server of servers) await server.stop('SIGKILL');
  await proxy?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const start = async () => {
  const server = await startServer({
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: proxy.url } }),
    ...s3ServerEnv(s3!.bucket),
    INGEST_PART_SIZE_BYTES: String(5 * 1024 * 1024),
    JOB_LEASE_SECONDS: '2',
  });
  servers.push(server);
  return server;
};

test('kill -9 mid-ingest: no partial object, and after a restart the blob completes with no multipart upload left open', { skip: !process.env.S3_TEST_ENDPOINT }, async () => {
  const { client, bucket } = s3!;
  const layer = image.layers[0]!;
  const key = `blobs/sha256/${layer.digest.slice(7)}`;
  const openUploads = async () => ((await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).filter((u) => u.Key === key).length;
  proxy.fault = 'slow';
  const first = await start();
  const manifest = await fetch(`${first.url}/v2/big/manifests/1`);
  assert.equal(manifest.status, 200);
  await until(async () => (await openUploads()) > 0, 60_000, 'the layer upload to start');
  await first.stop('SIGKILL');
  assert.equal(first.child.signalCode, 'SIGKILL');
  await assert.rejects(client.send(new HeadObjectCommand({ Bucket: bucket, Key: key })), { name: 'NotFound' }, 'nothing under the final key');
  assert.equal(await openUploads(), 1, 'the killed upload is still open');

  proxy.fault = 'none';
  await start();
  const { db, close } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`);
  try {
    await until(async () => (await db.select().from(blobs).where(eq(blobs.digest, layer.digest)))[0]?.state === 'ready', 120_000, 'the layer to be ingested after the restart');
  } finally {
    close();
  }
  assert.equal(await openUploads(), 0, 'no multipart upload left open');
  const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  assert.equal(object.ContentLength, layer.size);
  const hash = createHash('sha256');
  for await (const chunk of object.Body as AsyncIterable<Uint8Array>) hash.update(chunk);
  assert.equal(`sha256:${hash.digest('hex')}`, layer.digest);
});
